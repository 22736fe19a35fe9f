#!/usr/bin/env bash
# JPMML-Evaluator peer benchmark: build (if needed) and run.
#
#   benches/peers/jpmml/run.sh [model.pmml ...]     # default: the 7 tutorial wine models
#
# stdout: one '#' header line, then one line per model:
#   PEER jpmml <model-file-stem> <records_per_second> <median_seconds_per_pass> <rows> <cpu_records_per_second>
# (the last column divides by the thread's CPU time instead of wall time).
# Everything else (Maven output, JVM noise, VERBOSE per-sample times) goes to stderr.
#
# Env: WINE_DIR (default <repo>/../shared/data/wine), CSV (default WINE_DIR/winequality_red.csv),
#      ROWS (default all 1,599), ITERS (5), MIN_SECONDS (0.5), WARMUP_SECONDS (3, of thread CPU time), VERBOSE=1,
#      JAVA (default java), MVN (default mvn), JAVA_OPTS (extra JVM flags, appended).
#
# Build: tries `mvn -o` first (works once ~/.m2 holds JPMML-Evaluator and the pinned plugins); if
# that fails, builds online once, resolving from Maven Central into ~/.m2. Rebuilds only when
# pom.xml or src/ is newer than the last successful build.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"

# Model paths are taken relative to the caller's directory.
models=()
for m in "$@"; do
  case "$m" in
    /*) models+=("$m") ;;
    *) models+=("$PWD/$m") ;;
  esac
done
export WINE_DIR="${WINE_DIR:-$repo/../shared/data/wine}"
case "$WINE_DIR" in /*) ;; *) WINE_DIR="$PWD/$WINE_DIR" ;; esac
if [[ -n "${CSV:-}" ]]; then
  case "$CSV" in /*) ;; *) CSV="$PWD/$CSV" ;; esac
  export CSV
fi

cd "$here"

JAVA="${JAVA:-java}"
MVN="${MVN:-mvn}"
stamp="target/.build-ok"

need_build() {
  [[ -f "$stamp" && -d target/lib && -f target/classes/flowstage/peers/Main.class ]] || return 0
  [[ -n "$(find pom.xml src -newer "$stamp" -print -quit)" ]]
}

if need_build; then
  command -v "$MVN" >/dev/null || { echo "run.sh: '$MVN' not found (need Maven 3.6+)" >&2; exit 1; }
  log="$(mktemp "${TMPDIR:-/tmp}/jpmml-peer-mvn.XXXXXX")"
  if "$MVN" -q -B -o package >"$log" 2>&1; then
    :
  else
    echo "run.sh: offline build failed; resolving from Maven Central (first run)..." >&2
    if ! "$MVN" -q -B package >"$log" 2>&1; then
      echo "run.sh: Maven build failed; log follows" >&2
      cat "$log" >&2
      rm -f "$log"
      exit 1
    fi
  fi
  rm -f "$log"
  touch "$stamp"
fi

# Java 17+ required (pom targets release 17).
jv="$("$JAVA" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p')"
if [[ -z "$jv" || "${jv%%.*}" -lt 17 ]]; then
  echo "run.sh: need Java 17+, '$JAVA' reports '${jv:-unknown}'" >&2
  exit 1
fi

# Keep only '#' and 'PEER ' lines on stdout; route anything else the JVM prints to stderr.
# pipefail makes a JVM failure (e.g. a bad model file, exit 2) the script's exit status.
# shellcheck disable=SC2086
"$JAVA" -Xms1g -Xmx1g ${JAVA_OPTS:-} -cp "target/classes:target/lib/*" flowstage.peers.Main \
  ${models[@]+"${models[@]}"} \
  | while IFS= read -r line; do
      case "$line" in
        '#'* | 'PEER '*) printf '%s\n' "$line" ;;
        *) printf '%s\n' "$line" >&2 ;;
      esac
    done
