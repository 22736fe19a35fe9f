#!/usr/bin/env bash
# Stops and/or starts again the broker that start.sh started in $KAFKA_RUN_DIR, on the SAME
# ports with the SAME data directory (no re-formatting): topics, committed offsets and records
# survive. For failure tests ("the broker goes away mid-stream and comes back").
#
#   KAFKA_RUN_DIR=/tmp/x scripts/kafka/restart.sh stop    # SIGTERM, wait; keep workdir
#   KAFKA_RUN_DIR=/tmp/x scripts/kafka/restart.sh start   # start again; prints the bootstrap
#   KAFKA_RUN_DIR=/tmp/x scripts/kafka/restart.sh         # both
#
# `stop` keeps $KAFKA_RUN_DIR/{bootstrap,workdir} (only broker.pid goes); stop.sh afterwards
# still removes the workdir. KAFKA_STOP_SIGNAL=KILL stops it with SIGKILL (a crash) instead.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

what="${1:-both}"
WORKDIR_FILE="$KAFKA_RUN_DIR/workdir"
if [[ ! -f "$WORKDIR_FILE" ]]; then
    echo "restart.sh: no $WORKDIR_FILE: start a broker with start.sh first" >&2
    exit 1
fi
WORKDIR="$(cat "$WORKDIR_FILE")"
CONFIG="$WORKDIR/server.properties"
if [[ ! -f "$CONFIG" ]]; then
    echo "restart.sh: $CONFIG is missing" >&2
    exit 1
fi

do_stop() {
    local pid_file="$KAFKA_RUN_DIR/broker.pid" pid
    if [[ ! -f "$pid_file" ]]; then
        echo "restart.sh: no broker pid file; the broker is not running" >&2
        return 0
    fi
    pid="$(cat "$pid_file")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "-${KAFKA_STOP_SIGNAL:-TERM}" "$pid"
        for _ in $(seq 1 120); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "restart.sh: pid $pid still alive after 30s, sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
        fi
    fi
    rm -f "$pid_file"
    echo "restart.sh: stopped broker pid $pid (data kept in $WORKDIR)" >&2
}

do_start() {
    if [[ -f "$KAFKA_RUN_DIR/broker.pid" ]] && kill -0 "$(cat "$KAFKA_RUN_DIR/broker.pid")" 2>/dev/null; then
        echo "restart.sh: the broker is running (pid $(cat "$KAFKA_RUN_DIR/broker.pid")); stop it first" >&2
        exit 1
    fi
    local port bootstrap
    port="$(sed -n 's/^listeners=PLAINTEXT:\/\/127\.0\.0\.1:\([0-9]*\),.*/\1/p' "$CONFIG")"
    bootstrap="127.0.0.1:$port"
    launch_broker "$CONFIG" "$WORKDIR" "$bootstrap" restart.sh
    echo "$bootstrap"
}

case "$what" in
stop) do_stop ;;
start) do_start ;;
both)
    do_stop
    do_start
    ;;
*)
    echo "usage: restart.sh [stop|start]" >&2
    exit 2
    ;;
esac
