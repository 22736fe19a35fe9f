#!/usr/bin/env bash
# The project's test command (README's second command; .ci/run calls exactly this).
# Format, lints, then every test of the workspace (unit, integration, doc-tests).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test (workspace)"
cargo test --workspace --locked
