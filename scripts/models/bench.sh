#!/usr/bin/env bash
# One command, same run: flowstage-model's scoring benchmark (frozen graph, SavedModel, ONNX MLP)
# and onnxruntime on the same ONNX model. Needs ../shared and .venv-models (see README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo bench -p flowstage-model --bench scoring
.venv-models/bin/python scripts/models/bench_onnxruntime.py
