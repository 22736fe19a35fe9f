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
