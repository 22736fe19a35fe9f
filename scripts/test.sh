#!/usr/bin/env bash
# The project's test command (README's second command; .ci/run calls exactly this).
# Format, lints, API docs, then every test of the workspace (unit, integration, doc-tests),
# with a real Apache Kafka (fetched from Maven Central by scripts/kafka/) for the
# end-to-end Kafka tests. Without Java/Maven those tests say SKIPPED and pass.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Public items are documented (missing_docs) and their links resolve.
echo "== cargo doc (-D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

# Real Apache Kafka for the end-to-end suite, stopped on exit whatever happens.
if [[ -z "${FLOWSTAGE_KAFKA_BOOTSTRAP:-}" && "${FLOWSTAGE_NO_KAFKA:-}" != 1 ]]; then
    if command -v java >/dev/null && command -v mvn >/dev/null; then
        echo "== starting Apache Kafka (scripts/kafka/start.sh)"
        trap 'scripts/kafka/stop.sh >/dev/null 2>&1 || true' EXIT
        FLOWSTAGE_KAFKA_BOOTSTRAP="$(scripts/kafka/start.sh)"
        export FLOWSTAGE_KAFKA_BOOTSTRAP
        echo "   Kafka at $FLOWSTAGE_KAFKA_BOOTSTRAP"
        # Its SASL_PLAINTEXT listener (user flowstage), its SSL listener (certificate from
        # the throwaway CA in ca.pem) and its SASL_SSL listener (SCRAM-SHA-512, same user and
        # certificate), for the secured-client tests.
        run_dir="${KAFKA_RUN_DIR:-${KAFKA_CACHE_DIR:-scripts/kafka/.cache}/run}"
        FLOWSTAGE_KAFKA_SASL_BOOTSTRAP="$(cat "$run_dir/sasl-bootstrap" 2>/dev/null || true)"
        FLOWSTAGE_KAFKA_SSL_BOOTSTRAP="$(cat "$run_dir/ssl-bootstrap" 2>/dev/null || true)"
        FLOWSTAGE_KAFKA_SASL_SSL_BOOTSTRAP="$(cat "$run_dir/sasl-ssl-bootstrap" 2>/dev/null || true)"
        FLOWSTAGE_KAFKA_SSL_CA=""
        if [[ -f "$run_dir/ca.pem" ]]; then
            FLOWSTAGE_KAFKA_SSL_CA="$(cd "$run_dir" && pwd)/ca.pem"
        fi
        export FLOWSTAGE_KAFKA_SASL_BOOTSTRAP FLOWSTAGE_KAFKA_SSL_BOOTSTRAP FLOWSTAGE_KAFKA_SSL_CA \
            FLOWSTAGE_KAFKA_SASL_SSL_BOOTSTRAP
    else
        echo "== no java/mvn: the Apache Kafka end-to-end tests will be SKIPPED"
    fi
fi

# A hung test fails the run with a message instead of running into CI's time limit: the
# tests (with their build) get FLOWSTAGE_TEST_TIMEOUT seconds, 3600 by default (a clean
# run of this script takes under 20 minutes on 2 cores).
echo "== cargo test (workspace)"
if command -v timeout >/dev/null; then
    status=0
    timeout --kill-after=30 "${FLOWSTAGE_TEST_TIMEOUT:-3600}" cargo test --workspace --locked ||
        status=$?
    if [[ $status == 124 || $status == 137 ]]; then
        echo "== the tests (with their build) did not finish in ${FLOWSTAGE_TEST_TIMEOUT:-3600} s;" \
            "a hung test says 'has been running for over 60 seconds' above" >&2
    fi
    exit "$status"
fi
cargo test --workspace --locked
