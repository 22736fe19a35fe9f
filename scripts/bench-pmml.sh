#!/usr/bin/env bash
# flowstage-pmml vs JPMML-Evaluator on the seven tutorial wine models, one thread each, same run.
#
#   scripts/bench-pmml.sh                       # full run (~3 min on 2 busy cores)
#   ROWS=200 ITERS=2 scripts/bench-pmml.sh      # quick smoke run
#
# Runs pmml/benches/wine.rs (cargo bench, release) and benches/peers/jpmml/run.sh (JPMML-Evaluator
# 1.7 from Maven Central, JIT warm-up) over the same models and rows, then prints one table:
#   model | ours rec/s | JPMML rec/s | ratio | PASS/MISS (ratio >= TARGET, default 5)
# Ratios use wall-clock records/s (the median of ITERS samples of >= MIN_SECONDS each); the
# cpu-ratio column divides by each thread's CPU time instead, which is less sensitive to other
# processes on a busy machine. Raw RESULT/PEER lines are kept in the output above the table.
#
# Env (passed to both sides): ROWS (default 1599), ITERS (5), MIN_SECONDS (0.5), WARMUP_SECONDS
# (ours 1, JPMML 3 — seconds of thread CPU time), WINE_DIR (default <repo>/../shared/data/wine);
# TARGET (5); CARGO_TARGET_DIR (default /work/target-pmml). Exit status 0 even on MISS; 1 when a
# side fails; 0 with a note when the wine data is absent.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/target-pmml}"
export WINE_DIR="${WINE_DIR:-$repo/../shared/data/wine}"
TARGET="${TARGET:-5}"

if [[ ! -f "$WINE_DIR/winequality_red.csv" ]]; then
  echo "bench-pmml: SKIPPED — $WINE_DIR/winequality_red.csv is absent (the wine data lives in ../shared/data/wine)"
  exit 0
fi

out="$(mktemp "${TMPDIR:-/tmp}/bench-pmml.XXXXXX")"
trap 'rm -f "$out"' EXIT

echo "bench-pmml: building + running flowstage-pmml (cargo bench, release)..." >&2
nice cargo bench -q -p flowstage-pmml --bench wine --no-run >&2
cargo bench -q -p flowstage-pmml --bench wine 2>/dev/null | tee -a "$out"

echo "bench-pmml: running JPMML-Evaluator peer (benches/peers/jpmml/run.sh)..." >&2
WARMUP_SECONDS="${JPMML_WARMUP_SECONDS:-${WARMUP_SECONDS:-3}}" \
  benches/peers/jpmml/run.sh | tee -a "$out"

echo
awk -v target="$TARGET" '
  $1 == "RESULT" { ours[$3] = $4; ours_cpu[$3] = $7; if (!($3 in seen)) { seen[$3] = 1; order[++n] = $3 } }
  $1 == "PEER"   { peer[$3] = $4; peer_cpu[$3] = $7; if (!($3 in seen)) { seen[$3] = 1; order[++n] = $3 } }
  END {
    printf "%-48s %14s %14s %8s %9s  %s\n", "model", "ours rec/s", "JPMML rec/s", "ratio", "cpu-ratio", "vs " target "x"
    pass = 0; total = 0
    for (i = 1; i <= n; i++) {
      m = order[i]
      if (!(m in ours) || !(m in peer) || peer[m] <= 0 || peer_cpu[m] <= 0) {
        printf "%-48s %14s %14s %8s %9s  %s\n", m, (m in ours) ? ours[m] : "-", (m in peer) ? peer[m] : "-", "-", "-", "MISSING"
        total++
        continue
      }
      r = ours[m] / peer[m]; rc = ours_cpu[m] / peer_cpu[m]
      verdict = (r >= target) ? "PASS" : "MISS"
      if (r >= target) pass++
      total++
      printf "%-48s %14.0f %14.0f %7.1fx %8.1fx  %s\n", m, ours[m], peer[m], r, rc, verdict
    }
    printf "%d/%d models at >= %sx JPMML (wall-clock ratio)\n", pass, total, target
  }' "$out"
