#!/usr/bin/env bash
# Regenerate the PMML conformance fixtures (pmml/tests/fixtures/conformance/).
# Needs python3 (3.11 tested) and Java 17 on PATH; installs the pinned packages into
# .venv-conformance at the repository root (git-ignored). Extra arguments go to generate.py,
# e.g. `--only hw_tree` to rebuild some cases.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
VENV="${VENV:-$ROOT/.venv-conformance}"
command -v java >/dev/null || { echo "java (17) is required on PATH" >&2; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q -r "$HERE/requirements.txt"
# light and deterministic: one BLAS/OpenMP thread
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONHASHSEED=0
exec "$VENV/bin/python" "$HERE/generate.py" "$@"
