#!/usr/bin/env bash
# Installs what the tests need (idempotent) and runs the test suite: everything but the vLLM tests, then
# the vLLM tests on their own (a real vLLM server and the in-process engine on CPU, minutes).
# Extra arguments go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/install.sh
# PostgreSQL and chromium, for the deployment's storage test and the browser test.
bash infra/install_test_packages.sh
# vLLM's CPU build, in its own environment, for the tests marked `vllm` (a few seconds once installed).
bash infra/install_vllm.sh
.venv/bin/python -m pytest -q -ra -m "not vllm" "$@"
.venv/bin/python -m pytest -q -ra -m vllm "$@"
