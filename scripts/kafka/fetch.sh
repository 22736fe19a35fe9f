#!/usr/bin/env bash
# Resolves Apache Kafka $KAFKA_VERSION (org.apache.kafka:kafka_2.13 + kafka-tools
# + runtime dependencies) from Maven Central into .cache/<version>/libs.
# A no-op when the jars are already there, so later runs are offline.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [[ -f "$KAFKA_LIBS/.complete" ]]; then
    exit 0
fi
command -v mvn >/dev/null || { echo "fetch.sh: mvn not found on PATH" >&2; exit 1; }
echo "fetch.sh: resolving Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_LIBS" >&2
rm -rf "$KAFKA_LIBS"
mkdir -p "$KAFKA_LIBS"
if ! mvn -q -B -f "$KAFKA_SCRIPTS_DIR/pom.xml" \
        -Dkafka.version="$KAFKA_VERSION" \
        dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS" >&2; then
    echo "fetch.sh: mvn could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION (see above)" >&2
    rm -rf "$KAFKA_LIBS"
    exit 1
fi
ls "$KAFKA_LIBS"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null
touch "$KAFKA_LIBS/.complete"
echo "fetch.sh: $(ls "$KAFKA_LIBS" | wc -l) jars in $KAFKA_LIBS" >&2
