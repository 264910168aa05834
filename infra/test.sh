#!/usr/bin/env bash
# Installs what the tests need (idempotent) and runs the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/install.sh
# vLLM's CPU build, in its own environment, for the tests marked `vllm` (a few seconds once installed).
bash infra/install_vllm.sh
exec .venv/bin/python -m pytest -q -ra "$@"
