#!/usr/bin/env bash
# Stops the broker started by start.sh (by its pid) and removes its temp dir.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PID_FILE="$KAFKA_RUN_DIR/broker.pid"
WORKDIR="$(cat "$KAFKA_RUN_DIR/workdir" 2>/dev/null || true)"
if [[ ! -f "$PID_FILE" && -z "$WORKDIR" ]]; then
    echo "stop.sh: no broker pid file ($PID_FILE); nothing to stop" >&2
    exit 0
fi
PID="$(cat "$PID_FILE" 2>/dev/null || true)"
if [[ -z "$PID" ]]; then
    echo "stop.sh: no broker running (stopped by restart.sh stop); removing its files" >&2
elif kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID"
    for _ in $(seq 1 60); do
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$PID" 2>/dev/null; then
        echo "stop.sh: pid $PID still alive after 30s, sending SIGKILL" >&2
        kill -KILL "$PID" 2>/dev/null || true
    fi
    echo "stop.sh: stopped broker pid $PID" >&2
else
    echo "stop.sh: pid $PID was not running" >&2
fi
rm -f "$PID_FILE" "$KAFKA_RUN_DIR/bootstrap" "$KAFKA_RUN_DIR/sasl-bootstrap" \
    "$KAFKA_RUN_DIR/ssl-bootstrap" "$KAFKA_RUN_DIR/sasl-ssl-bootstrap" "$KAFKA_RUN_DIR/ca.pem" \
    "$KAFKA_RUN_DIR/workdir"
if [[ -n "$WORKDIR" && -d "$WORKDIR" && "$WORKDIR" == *flowstage-kafka.* && "${KAFKA_KEEP_WORKDIR:-0}" != 1 ]]; then
    rm -rf "$WORKDIR"
fi
