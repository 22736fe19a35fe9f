#!/usr/bin/env bash
# The wine pipeline end to end, one command: on the embedded broker, then on a
# real Apache Kafka started here (scripts/kafka/, stopped on exit).
#   BENCH_RECORDS (default 500000), BENCH_RATE (5000,50000), BENCH_LATENCY_RECORDS (10 s worth),
#   BENCH_LOW_LATENCY_RUNS (3), KAFKA_GC (the broker's collector, default -XX:+UseZGC);
#   more knobs (skip parts, extra librdkafka properties) in stages/benches/pipeline.rs
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p flowstage-stages --features pmml --bench pipeline --locked
if [[ -z "${FLOWSTAGE_KAFKA_BOOTSTRAP:-}" ]] && command -v java >/dev/null && command -v mvn >/dev/null; then
    export KAFKA_RUN_DIR="${KAFKA_RUN_DIR:-$PWD/scripts/kafka/.cache/run-bench}"
    # ZGC collects concurrently; G1's young collections stop the broker 5–9 ms
    # about once a second at 50,000 records/s (jstat), a latency tail of its own.
    export KAFKA_GC="${KAFKA_GC:--XX:+UseZGC}"
    trap 'scripts/kafka/stop.sh >/dev/null 2>&1 || true' EXIT
    FLOWSTAGE_KAFKA_BOOTSTRAP="$(scripts/kafka/start.sh)"
    export FLOWSTAGE_KAFKA_BOOTSTRAP
    echo "Apache Kafka at $FLOWSTAGE_KAFKA_BOOTSTRAP"
fi
cargo bench -p flowstage-stages --features pmml --bench pipeline --locked
