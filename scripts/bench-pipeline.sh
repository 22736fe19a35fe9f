#!/usr/bin/env bash
# The wine pipeline end to end, one command: on the embedded broker, then on a
# real Apache Kafka started here (scripts/kafka/, stopped on exit).
#   BENCH_RECORDS (default 500000), BENCH_RATE (5000,50000), BENCH_LATENCY_RECORDS (10 s worth),
#   BENCH_LOW_LATENCY_RUNS (3), BENCH_PAUSE_SECS (the idle machine's own pauses, measured
#   after the runs, 5 s), KAFKA_HEAP (the broker's heap, default 4g) and KAFKA_GC (its
#   collector's flags, default G1 with the heap reserved and touched at start),
#   KAFKA_SERVER_PROPERTIES (extra broker properties, default 1 network and 2 I/O threads),
#   TOKIO_WORKER_THREADS (the benchmark's async worker threads, default 1);
#   more knobs (skip parts, extra librdkafka properties) in stages/benches/pipeline.rs
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p flowstage-stages --features pmml --bench pipeline --locked
if [[ -z "${FLOWSTAGE_KAFKA_BOOTSTRAP:-}" ]] && command -v java >/dev/null && command -v mvn >/dev/null; then
    export KAFKA_RUN_DIR="${KAFKA_RUN_DIR:-$PWD/scripts/kafka/.cache/run-bench}"
    # A heap large enough that the broker collects rarely (Kafka's docs give G1 on 6 GiB
    # as typical arguments). At 50,000 records/s with low-latency settings the broker
    # allocates ~100 MB/s; on 768 MiB, ZGC ran a cycle every 3–5 s whose concurrent
    # mark kept one of the two cores busy for a median 150 ms (up to 450), and G1
    # stopped the broker 5–9 ms about once a second. On 4 GiB G1 stops it 10–30 ms
    # about every 30 s (docs/pipeline-benchmark.md, session 23).
    export KAFKA_HEAP="${KAFKA_HEAP:-4g}"
    export KAFKA_GC="${KAFKA_GC:--XX:+UseG1GC -Xms$KAFKA_HEAP -XX:+AlwaysPreTouch}"
    # One network thread and two request handlers instead of Kafka's 3 and 8: on two cores
    # shared with every client, fewer broker threads wake each other per request. In 6
    # alternated rounds of the low-latency runs (18 runs a side), the share of the server's records
    # over 5 ms fell from a median 2.4 % to 1.5 % (plain loop 1.6 % to 1.1 %;
    # docs/pipeline-benchmark.md, session 24).
    export KAFKA_SERVER_PROPERTIES="${KAFKA_SERVER_PROPERTIES-num.network.threads=1
num.io.threads=2}"
    trap 'scripts/kafka/stop.sh >/dev/null 2>&1 || true' EXIT
    FLOWSTAGE_KAFKA_BOOTSTRAP="$(scripts/kafka/start.sh)"
    export FLOWSTAGE_KAFKA_BOOTSTRAP
    echo "Apache Kafka at $FLOWSTAGE_KAFKA_BOOTSTRAP"
fi
# One async worker thread for the benchmark's runtime (the server's and the plain loop's), as
# `TOKIO_WORKER_THREADS=1 flowstage serve` runs: on two cores shared with the broker, the
# consume thread and librdkafka's threads, a second worker mostly wakes up to find nothing to
# do. In 6 alternated rounds of the low-latency runs (18 runs a side) the server's p99 was at
# most 5 ms in 13 runs against 6, its share of records over 5 ms a median 0.81 % against 1.52 %
# (plain loop 0.67 % against 0.97 %); throughput the same
# (docs/pipeline-benchmark.md, session 24).
export TOKIO_WORKER_THREADS="${TOKIO_WORKER_THREADS:-1}"
cargo bench -p flowstage-stages --features pmml --bench pipeline --locked
