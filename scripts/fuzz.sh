#!/usr/bin/env bash
# Builds every cargo-fuzz target of fuzz/ and runs each in turn for $FUZZ_SECONDS, then prints
# per target: executions, corpus size and crash/timeout/OOM artifacts.
#
#   scripts/fuzz.sh                       # all targets, 600 s each
#   FUZZ_SECONDS=60 scripts/fuzz.sh pmml  # one target, one minute
#
# Targets: pmml (flowstage-pmml parse/compile/evaluate), savedmodel (SavedModelArchive /
# TensorBundle reader), tensor_models (frozen graph / ONNX loading), wire (WineRecord and
# ModelDescriptor decoding, descriptor -> model loading).
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`). Seeds are
# written by fuzz/seeds.py from the repository's fixtures and ../shared/data/wine (when present)
# into fuzz/corpus/<target>/ (git-ignored), which also keeps what the fuzzer finds. Crash inputs
# land in fuzz/artifacts/<target>/; copy them into <crate>/tests/fixtures/fuzz/<target>/ so the
# fuzz_regressions tests replay them.
#
# Environment: FUZZ_SECONDS (default 600), FUZZ_SANITIZER (address | none; default address),
# FUZZ_RSS_MB (default 2048), FUZZ_TIMEOUT (seconds per input, default 10), CARGO_TARGET_DIR
# (default fuzz/target). Runs under `nice -n 19`, one target at a time.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_EACH=${FUZZ_SECONDS:-600}
SANITIZER=${FUZZ_SANITIZER:-address}
RSS_MB=${FUZZ_RSS_MB:-2048}
TIMEOUT=${FUZZ_TIMEOUT:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/fuzz/target}

ALL_TARGETS=(pmml savedmodel tensor_models wire)
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

max_len() {
  case "$1" in
    tensor_models) echo 65536 ;;
    *) echo 131072 ;;
  esac
}

python3 fuzz/seeds.py "$ROOT"

echo "== building every target (sanitizer: $SANITIZER)"
nice -n 19 cargo +nightly fuzz build --fuzz-dir fuzz -O --debug-assertions --sanitizer "$SANITIZER"

LOGDIR=$ROOT/fuzz/artifacts/logs
mkdir -p "$LOGDIR"
SUMMARY=()
for t in "${TARGETS[@]}"; do
  mkdir -p "fuzz/artifacts/$t"
  log=$LOGDIR/$t.log
  echo "== fuzzing $t for ${SECONDS_EACH}s (log: $log)"
  set +e
  nice -n 19 cargo +nightly fuzz run --fuzz-dir fuzz -O --debug-assertions --sanitizer "$SANITIZER" "$t" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb="$RSS_MB" -timeout="$TIMEOUT" \
    -max_len="$(max_len "$t")" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  if [ -z "$execs" ]; then
    execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  fi
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  found=$(find "fuzz/artifacts/$t" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | wc -l)
  line="$t: exit $rc, ${SECONDS_EACH}s, executions ${execs:-?}, corpus $corpus files, artifacts $found"
  echo "$line"
  SUMMARY+=("$line")
done

echo "== summary"
printf '%s\n' "${SUMMARY[@]}"
