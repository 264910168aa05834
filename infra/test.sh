#!/usr/bin/env bash
# Installs what the tests need (idempotent) and runs the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/install.sh
exec .venv/bin/python -m pytest -q -ra "$@"
