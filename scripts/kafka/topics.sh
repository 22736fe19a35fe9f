#!/usr/bin/env bash
# kafka-topics for the cached Kafka: scripts/kafka/topics.sh --bootstrap-server H:P --list
# With no --bootstrap-server, uses the broker started by start.sh.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
"$KAFKA_SCRIPTS_DIR/fetch.sh"
args=("$@")
if [[ " $* " != *" --bootstrap-server "* ]]; then
    [[ -f "$KAFKA_RUN_DIR/bootstrap" ]] || { echo "topics.sh: no broker running (no $KAFKA_RUN_DIR/bootstrap)" >&2; exit 1; }
    args=(--bootstrap-server "$(cat "$KAFKA_RUN_DIR/bootstrap")" "${args[@]}")
fi
kafka_tool org.apache.kafka.tools.TopicCommand "${args[@]}"
