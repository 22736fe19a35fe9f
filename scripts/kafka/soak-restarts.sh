#!/usr/bin/env bash
# Soak test (run by hand, not in CI): restarts Apache Kafka again and again under a running
# `flowstage serve` and checks after each restart that records are scored again. Stops at the
# first restart after which nothing moves for STALL_SECS, and then keeps the server's log and,
# when gdb is installed, its thread stacks (where a silent server waits).
#
#   scripts/kafka/soak-restarts.sh                 # 30 restarts
#   ROUNDS=100 scripts/kafka/soak-restarts.sh
#
# Environment: ROUNDS (30), STALL_SECS (90), RATE (records/s, 4000), OUT (a new temp dir),
# SERVE_ARGS (extra `flowstage serve` arguments, e.g. "--consumer-property debug=cgrp"),
# SERVE_LOG (its RUST_LOG). Uses the debug build (`cargo build -p flowstage-cli` first) unless
# FLOWSTAGE_BIN names a binary. The broker runs in a KAFKA_RUN_DIR of its own.
#
# Exit status: 0 when every restart was followed by progress, 1 on a stall.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

ROUNDS="${ROUNDS:-30}"
STALL_SECS="${STALL_SECS:-90}"
RATE="${RATE:-4000}"
OUT="${OUT:-$(mktemp -d -t flowstage-soak.XXXXXX)}"
BIN="${FLOWSTAGE_BIN:-${CARGO_TARGET_DIR:-target}/debug/flowstage}"
SERVE_LOG="${SERVE_LOG:-warn,flowstage=info,flowstage_stages=info,flowstage_stages::kafka=debug,flowstage_stages::wine::server=debug,librdkafka=debug}"
DATA="../shared/data/wine/winequality_red.csv"
MODEL="../shared/data/wine/winequalityLinearRegression.pmml"
export KAFKA_RUN_DIR="$OUT/kafka-run"

[[ -x "$BIN" ]] || { echo "soak: no $BIN: run 'cargo build -p flowstage-cli' first" >&2; exit 2; }
if [[ ! -f "$DATA" || ! -f "$MODEL" ]]; then
    echo "soak: the wine data is absent ($DATA, $MODEL): nothing to run" >&2
    exit 2
fi
mkdir -p "$OUT"
echo "soak: logs in $OUT"

serve_pid="" provide_pid=""
cleanup() {
    {
        [[ -n "$provide_pid" ]] && kill "$provide_pid" && wait "$provide_pid"
        [[ -n "$serve_pid" ]] && kill -9 "$serve_pid" && wait "$serve_pid"
    } 2>/dev/null || true
    scripts/kafka/stop.sh >/dev/null 2>&1 || true
}
trap cleanup EXIT

bootstrap="$(scripts/kafka/start.sh 2>>"$OUT/kafka.err")"
# shellcheck disable=SC2086 # SERVE_ARGS is a list of words
RUST_LOG="$SERVE_LOG" "$BIN" serve --brokers "$bootstrap" --group "soak-$$" --instance-id soak \
    --http 127.0.0.1:0 \
    --consumer-property session.timeout.ms=6000 --consumer-property heartbeat.interval.ms=500 \
    ${SERVE_ARGS:-} >"$OUT/serve.out" 2>"$OUT/serve.err" &
serve_pid=$!
# Its HTTP address, from its banner ("… HTTP state on http://127.0.0.1:PORT/state").
state_url=""
for _ in $(seq 1 120); do
    state_url="$(grep -o 'http://[0-9.:]*/state' "$OUT/serve.out" 2>/dev/null | head -1)" || true
    [[ -n "$state_url" ]] && break
    kill -0 "$serve_pid" 2>/dev/null || { echo "soak: serve exited: $(tail -3 "$OUT/serve.err")" >&2; exit 1; }
    sleep 1
done
[[ -n "$state_url" ]] || { echo "soak: no serve banner" >&2; exit 1; }
"$BIN" provide --brokers "$bootstrap" --data "$DATA" --models "$MODEL" --rate "$RATE" \
    --count 1000000000 --loop --no-progress >"$OUT/provide.out" 2>"$OUT/provide.err" &
provide_pid=$!

# Records scored so far (the server's HTTP state), or -1 while it does not answer.
scored() {
    local s
    s="$(curl -s "$state_url" | grep -o '"scored":[0-9]*' | head -1)" || true
    echo "${s#\"scored\":}" | grep -E '^[0-9]+$' || echo -1
}
# Waits until more than $1 + 1000 records are scored; false after STALL_SECS.
progress_after() {
    local t
    for ((t = 0; t < STALL_SECS; t++)); do
        sleep 1
        (($(scored) > $1 + 1000)) && return 0
    done
    return 1
}

progress_after 0 || { echo "soak: nothing was scored at the start" >&2; exit 1; }
for ((round = 1; round <= ROUNDS; round++)); do
    sleep $((5 + RANDOM % 10))
    scripts/kafka/restart.sh stop >/dev/null 2>>"$OUT/kafka.err"
    sleep $((RANDOM % 8))
    scripts/kafka/restart.sh start >/dev/null 2>>"$OUT/kafka.err"
    before="$(scored)"
    if progress_after "$before"; then
        echo "soak: restart $round/$ROUNDS: scoring went on ($before -> $(scored))"
    else
        echo "soak: restart $round/$ROUNDS: STALL, nothing scored for ${STALL_SECS}s after the broker came back" >&2
        if command -v gdb >/dev/null; then
            timeout 60 gdb -p "$serve_pid" -batch -nx -ex "set pagination off" \
                -ex "thread apply all bt" >"$OUT/stacks.txt" 2>&1 || true
            echo "soak: thread stacks in $OUT/stacks.txt" >&2
        fi
        echo "soak: the server's log is $OUT/serve.err (its 'progress' lines show the step that stopped)" >&2
        exit 1
    fi
done
echo "soak: $ROUNDS restarts, scoring went on after each"
