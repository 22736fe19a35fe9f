#!/usr/bin/env bash
# Starts a single-node Apache Kafka (KRaft, broker+controller) on 127.0.0.1.
#
#   scripts/kafka/start.sh            # free port, prints e.g. 127.0.0.1:41234
#   KAFKA_PORT=9092 scripts/kafka/start.sh
#
# Storage is formatted in a fresh temp dir. Writes $KAFKA_RUN_DIR/{broker.pid,
# bootstrap,workdir}; stdout gets only the bootstrap address. Stop with stop.sh.
#
# The broker also listens with SASL_PLAINTEXT (mechanism PLAIN) on a second port
# (KAFKA_SASL_PORT, else a free one) for tests of secured clients; its address goes
# to $KAFKA_RUN_DIR/sasl-bootstrap (not to stdout). The one user is
# KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD (default flowstage / flowstage-secret).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

"$KAFKA_SCRIPTS_DIR/fetch.sh"

if [[ -f "$KAFKA_RUN_DIR/broker.pid" ]] && kill -0 "$(cat "$KAFKA_RUN_DIR/broker.pid")" 2>/dev/null; then
    echo "start.sh: a broker is already running (pid $(cat "$KAFKA_RUN_DIR/broker.pid")) at $(cat "$KAFKA_RUN_DIR/bootstrap"); run stop.sh first" >&2
    exit 1
fi

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
    local p i
    for i in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        if ! port_in_use "$p"; then
            echo "$p"
            return 0
        fi
    done
    echo "start.sh: no free port found" >&2
    return 1
}

PORT="${KAFKA_PORT:-$(free_port)}"
if port_in_use "$PORT"; then
    echo "start.sh: port $PORT is already in use" >&2
    exit 1
fi
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$(free_port)}"
while [[ "$CONTROLLER_PORT" == "$PORT" ]]; do CONTROLLER_PORT="$(free_port)"; done
SASL_PORT="${KAFKA_SASL_PORT:-$(free_port)}"
while [[ "$SASL_PORT" == "$PORT" || "$SASL_PORT" == "$CONTROLLER_PORT" ]]; do SASL_PORT="$(free_port)"; done
SASL_USERNAME="${KAFKA_SASL_USERNAME:-flowstage}"
SASL_PASSWORD="${KAFKA_SASL_PASSWORD:-flowstage-secret}"
if [[ ! "$SASL_USERNAME$SASL_PASSWORD" =~ ^[A-Za-z0-9._-]+$ ]]; then
    echo "start.sh: KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD: letters, digits, . _ - only" >&2
    exit 1
fi

WORKDIR="$(mktemp -d "${TMPDIR:-/tmp}/flowstage-kafka.XXXXXX")"
mkdir -p "$KAFKA_RUN_DIR" "$WORKDIR/data"
CONFIG="$WORKDIR/server.properties"
cat >"$CONFIG" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT,SASL_PLAINTEXT://127.0.0.1:$SASL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT,SASL_PLAINTEXT://127.0.0.1:$SASL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USERNAME="$SASL_PASSWORD";
log.dirs=$WORKDIR/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS

CLUSTER_ID="$(kafka_tool kafka.tools.StorageTool random-uuid)"
kafka_tool kafka.tools.StorageTool format -t "$CLUSTER_ID" -c "$CONFIG" >"$WORKDIR/format.log" 2>&1 || {
    echo "start.sh: formatting KRaft storage failed:" >&2
    cat "$WORKDIR/format.log" >&2
    exit 1
}

launch_broker "$CONFIG" "$WORKDIR" "127.0.0.1:$PORT" start.sh
echo "127.0.0.1:$SASL_PORT" >"$KAFKA_RUN_DIR/sasl-bootstrap"
echo "127.0.0.1:$PORT"
