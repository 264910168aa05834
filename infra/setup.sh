#!/usr/bin/env bash
# Sets up a fresh machine and runs the main job on the embedded defaults (bundled problems, in-process
# SmolLM2, local storage under data/), one run per shard, recorded in the local Dagster instance.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash infra/install.sh
# The instance is configured by the top-level dagster.yaml, read in place.
export DAGSTER_HOME="$PWD"
.venv/bin/python -m sigma_assets.run_main
echo "Done in $(( $(date +%s) - start )) s."
echo "Open the UI:  DAGSTER_HOME=\$PWD .venv/bin/dg dev  ->  http://127.0.0.1:3000 (from $PWD)"
