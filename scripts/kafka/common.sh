# Shared settings for the scripts in scripts/kafka/ (sourced, not run).
# shellcheck shell=bash
KAFKA_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
KAFKA_CACHE_DIR="${KAFKA_CACHE_DIR:-$KAFKA_SCRIPTS_DIR/.cache}"
KAFKA_LIBS="$KAFKA_CACHE_DIR/$KAFKA_VERSION/libs"
# Where start.sh writes broker.pid, bootstrap, workdir and stop.sh reads them.
KAFKA_RUN_DIR="${KAFKA_RUN_DIR:-$KAFKA_CACHE_DIR/run}"
JAVA="${JAVA:-java}"

kafka_classpath() {
    printf '%s/*' "$KAFKA_LIBS"
}

# Runs a Kafka tool class (e.g. org.apache.kafka.tools.TopicCommand) quietly.
kafka_tool() {
    local class="$1"
    shift
    "$JAVA" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
        -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
        -cp "$(kafka_classpath)" "$class" "$@"
}

# Launches kafka.Kafka with CONFIG detached (setsid), logging to WORKDIR/broker.log (appended),
# writes $KAFKA_RUN_DIR/{broker.pid,workdir,bootstrap} and waits until BOOTSTRAP answers a
# metadata request; on failure prints the log tail and exits. WHO names the caller in messages.
launch_broker() {
    local config="$1" workdir="$2" bootstrap="$3" who="$4"
    local start_timeout="${KAFKA_START_TIMEOUT:-90}" start_ns pid deadline elapsed_ms
    mkdir -p "$KAFKA_RUN_DIR"
    start_ns=$(date +%s%N)
    # shellcheck disable=SC2086 # KAFKA_GC and KAFKA_JVM_OPTS are lists of flags
    setsid "$JAVA" -Xms256m -Xmx${KAFKA_HEAP:-768m} ${KAFKA_GC:--XX:+UseG1GC} -Djava.awt.headless=true \
        ${KAFKA_JVM_OPTS:-} \
        -Dorg.slf4j.simpleLogger.defaultLogLevel="${KAFKA_LOG_LEVEL:-info}" \
        -Dorg.slf4j.simpleLogger.showDateTime=true \
        -cp "$(kafka_classpath)" kafka.Kafka "$config" \
        >>"$workdir/broker.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$KAFKA_RUN_DIR/broker.pid"
    echo "$workdir" >"$KAFKA_RUN_DIR/workdir"

    # Ready when the admin API answers a metadata request (kafka-topics --list).
    deadline=$((SECONDS + start_timeout))
    until kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" \
            --list --command-config /dev/null >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$who: the broker exited during start-up; last log lines:" >&2
            tail -n 40 "$workdir/broker.log" >&2
            rm -f "$KAFKA_RUN_DIR/broker.pid"
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            echo "$who: the broker did not answer within ${start_timeout}s; stopping it. Log: $workdir/broker.log" >&2
            kill "$pid" 2>/dev/null || true
            rm -f "$KAFKA_RUN_DIR/broker.pid"
            exit 1
        fi
        sleep 0.5
    done
    elapsed_ms=$((($(date +%s%N) - start_ns) / 1000000))
    echo "$bootstrap" >"$KAFKA_RUN_DIR/bootstrap"
    echo "$who: Apache Kafka $KAFKA_VERSION (KRaft) pid $pid ready at $bootstrap after ${elapsed_ms} ms; log $workdir/broker.log" >&2
}
