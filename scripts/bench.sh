#!/usr/bin/env bash
# The core benchmarks in one command: flowstage against its baselines (futures-util, a hand loop,
# tokio mpsc) and against Apache Pekko Streams, all measured in this run.
#
#   scripts/bench.sh                  # ITEMS=10000000, about 3 minutes on 2 cores
#   ITEMS=100000 scripts/bench.sh     # quick smoke run
#
# 1. cargo bench -p flowstage --bench core  (release; prints RESULT lines and its own table)
# 2. benches/peers/pekko/run.sh with the same ITEMS (skipped, with a message, without Java/Maven)
# 3. a combined table: every comparison with its ratio, target and PASS/MISS.
#
# Machine-readable lines on stdout (grep '^RESULT\|^TARGET'):
#   RESULT <scenario> <impl> <items_per_second> <median_seconds> <items>
#   TARGET <name> <PASS|MISS> <value> <bound>
# Pekko's scenarios are renamed to match flowstage's buffer sizes: Pekko async_boundary (default
# input buffer 16) -> async_boundary_buf16; Pekko async_boundary_buf1024 -> async_boundary
# (flowstage's async_boundary() buffers 1024). The peer's raw PEER lines are printed as well.
#
# Env: ITEMS, WARMUP (Rust, default 2), ITERS (Rust, default 5), PEKKO_WARMUP (default 3),
#      PEKKO_ITERS (default ITERS or 5), SCENARIOS (comma list, both harnesses), VERBOSE=1,
#      SKIP_PEKKO=1, CARGO (default cargo), JAVA, MVN.
# Exit status: 0 when everything ran (PASS or MISS alike), non-zero when a harness failed
# (build error, checksum mismatch).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

export ITEMS="${ITEMS:-10000000}"
CARGO="${CARGO:-cargo}"
JAVA="${JAVA:-java}"
MVN="${MVN:-mvn}"
peer_dir="benches/peers/pekko"

work="$(mktemp -d "${TMPDIR:-/tmp}/flowstage-bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

note() { printf '%s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------------
note "== [1/3] flowstage: $CARGO bench -p flowstage --bench core   (ITEMS=$ITEMS)"
if ! "$CARGO" bench -p flowstage --bench core | tee "$work/rust.txt"; then
  note "bench.sh: the flowstage benchmark failed (see above)"
  exit 1
fi

# ---------------------------------------------------------------------------------------------
note ""
note "== [2/3] Pekko Streams peer: $peer_dir/run.sh   (ITEMS=$ITEMS)"
peer_status="ran"
peer_why=""
if [[ "${SKIP_PEKKO:-}" == 1 ]]; then
  peer_status="skipped"; peer_why="SKIP_PEKKO=1"
elif ! command -v "$JAVA" >/dev/null 2>&1; then
  peer_status="skipped"; peer_why="'$JAVA' not found (need Java 17+)"
elif [[ ! -f "$peer_dir/target/.build-ok" ]] && ! command -v "$MVN" >/dev/null 2>&1; then
  peer_status="skipped"; peer_why="'$MVN' not found and the harness is not built yet (need Maven 3.6+)"
fi
# Pekko names its scenarios by Pekko's buffer sizes (see the header).
peer_scenarios=""
if [[ -n "${SCENARIOS:-}" ]]; then
  IFS=',' read -r -a wanted <<<"$SCENARIOS"
  for s in "${wanted[@]}"; do
    s="${s// /}"
    case "$s" in
      async_boundary) s=async_boundary_buf1024 ;;
      async_boundary_buf16) s=async_boundary ;;
    esac
    [[ -n "$s" ]] && peer_scenarios="${peer_scenarios:+$peer_scenarios,}$s"
  done
fi
if [[ "$peer_status" == ran ]]; then
  if ! SCENARIOS="$peer_scenarios" WARMUP="${PEKKO_WARMUP:-3}" ITERS="${PEKKO_ITERS:-${ITERS:-5}}" \
      JAVA="$JAVA" MVN="$MVN" "$peer_dir/run.sh" >"$work/pekko.txt"; then
    peer_status="failed"; peer_why="run.sh exited non-zero (see its messages above)"
  fi
fi
if [[ "$peer_status" == ran ]]; then
  cat "$work/pekko.txt"
else
  note "bench.sh: Pekko peer $peer_status: $peer_why; showing the Rust ratios only."
  : >"$work/pekko.txt"
fi

# ---------------------------------------------------------------------------------------------
note ""
note "== [3/3] combined"
elapsed=$(( $(date +%s) - start ))
awk -v peer_status="$peer_status" -v peer_why="$peer_why" -v elapsed="$elapsed" '
function fmt(ips) {
  if (ips == "") return "-"
  if (ips >= 1e9) return sprintf("%.2f G/s", ips / 1e9)
  if (ips >= 1e6) return sprintf("%.2f M/s", ips / 1e6)
  if (ips >= 1e3) return sprintf("%.2f k/s", ips / 1e3)
  return sprintf("%.0f /s", ips)
}
# One comparison row; kind: "le" (ratio <= bound), "lt" (ratio < bound), "info".
function row(scen, other, label, target, kind, bound, name,    fs, o, ratio, st, rs) {
  fs = ips[scen, "flowstage"]; o = ips[scen, other]
  if (fs == "" || o == "") {
    if (fs != "" && kind != "info") {
      printf "%-22s %12s  %-24s %12s %8s  %-22s %s\n", scen, fmt(fs), label, "-", "-", target, "n/a"
    }
    return
  }
  ratio = med[scen, "flowstage"] / med[scen, other]
  st = "-"
  if (kind == "le") st = (ratio <= bound) ? "PASS" : "MISS"
  if (kind == "lt") st = (ratio < bound) ? "PASS" : "MISS"
  rs = (ratio < 0.1) ? sprintf("%.3f", ratio) : sprintf("%.2f", ratio)
  printf "%-22s %12s  %-24s %12s %8s  %-22s %s\n", scen, fmt(fs), label, fmt(o), rs, target, st
  if (st != "-") {
    targets[++nt] = sprintf("TARGET %s %s %.4f %s", name, st, ratio, (kind == "le" ? "<=" : "<") bound)
    if (st == "PASS") npass++; else nmiss++
  }
}
FNR == 1 { file++ }
file == 1 && $1 == "RESULT" { ips[$2, $3] = $4; med[$2, $3] = $5; items = $6; next }
file == 2 && $1 == "PEER" {
  s = $3
  if (s == "async_boundary") s = "async_boundary_buf16"
  else if (s == "async_boundary_buf1024") s = "async_boundary"
  ips[s, "pekko"] = $4; med[s, "pekko"] = $5
  printf "RESULT %s pekko %s %s %s\n", s, $4, $5, $6
  next
}
END {
  print ""
  printf "flowstage vs baselines and Pekko, ITEMS=%s (median wall time; ratio = flowstage time / other time, < 1 means flowstage is faster)\n", items
  printf "%-22s %12s  %-24s %12s %8s  %-22s %s\n", "scenario", "flowstage", "vs", "other", "ratio", "target", "status"
  row("chain", "futures_util", "futures-util StreamExt", "<= 1.10", "le", 1.10, "chain_vs_futures_util")
  row("chain", "hand_loop", "hand loop", "<= 2.00", "le", 2.0, "chain_vs_hand_loop")
  row("chain", "pekko", "Pekko", "< 1 (faster)", "lt", 1, "chain_vs_pekko")
  if (ips["async_boundary", "flowstage"] != "") {
    v = ips["async_boundary", "flowstage"]; st = (v >= 30e6) ? "PASS" : "MISS"
    printf "%-22s %12s  %-24s %12s %8s  %-22s %s\n", "async_boundary", fmt(v), "(absolute, buffer 1024)", "-", "-", ">= 30 M/s", st
    targets[++nt] = sprintf("TARGET async_boundary_30M %s %.0f >=30000000", st, v)
    if (st == "PASS") npass++; else nmiss++
  }
  row("async_boundary", "tokio_mpsc", "tokio mpsc(1024)", "(info)", "info", 0, "")
  row("async_boundary", "pekko", "Pekko, buffer 1024", "< 1 (faster)", "lt", 1, "async_boundary_vs_pekko")
  if (ips["async_boundary_buf16", "flowstage"] != "" && ips["async_boundary", "tokio_mpsc"] != "") {
    ips["async_boundary_buf16", "tokio_mpsc"] = ips["async_boundary", "tokio_mpsc"]
    med["async_boundary_buf16", "tokio_mpsc"] = med["async_boundary", "tokio_mpsc"]
  }
  row("async_boundary_buf16", "tokio_mpsc", "tokio mpsc(1024)", "(info)", "info", 0, "")
  row("async_boundary_buf16", "pekko", "Pekko, buffer 16 (default)", "< 1 (faster)", "lt", 1, "async_boundary_buf16_vs_pekko")
  row("broadcast_zip", "hand_loop", "hand loop", "(info)", "info", 0, "")
  row("broadcast_zip", "pekko", "Pekko", "< 1 (faster)", "lt", 1, "broadcast_zip_vs_pekko")
  row("balance_merge", "hand_loop", "hand loop", "(info)", "info", 0, "")
  row("balance_merge", "pekko", "Pekko", "< 1 (faster)", "lt", 1, "balance_merge_vs_pekko")
  print ""
  for (i = 1; i <= nt; i++) print targets[i]
  if (peer_status != "ran") printf "# Pekko peer %s: %s (the \"faster than Pekko\" targets were not checked)\n", peer_status, peer_why
  printf "SUMMARY %d PASS %d MISS (pekko peer: %s; %d s before this table)\n", npass, nmiss, peer_status, elapsed
}
' "$work/rust.txt" "$work/pekko.txt"

if [[ "$peer_status" == failed ]]; then
  exit 1
fi
