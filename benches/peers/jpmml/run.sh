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

. "$here/../lib.sh"
peer_build jpmml
peer_check_java
peer_run ${models[@]+"${models[@]}"}
