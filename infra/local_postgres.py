"""A real PostgreSQL server on loopback, from the Debian `postgresql` package
(`infra/install_test_packages.sh`).

Used by the tests (the Dagster instance of the deployment stack, on real PostgreSQL storage) and by hand:

    python infra/local_postgres.py        # serves on 127.0.0.1:5432 until Ctrl-C, prints the DAGSTER_PG_* env

Each server lives in its own temporary folder (data, socket, log) that is removed when it stops. The
server refuses to run as root, so as root the folder belongs to the `postgres` user and the server
commands run as that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ports import HOST, free_port, port_open

DEFAULT_PG_PORT = 5432
SERVER_USER = "postgres"  # the Debian package's system user


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    database: str

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    def dagster_env(self) -> dict[str, str]:
        """The variables that the deployment's dagster.yaml reads its storage settings from."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.database,
        }

    def psql(self, sql: str) -> str:
        """Runs `sql` with the `psql` client; returns its unaligned, header-less output."""
        result = subprocess.run(
            [_binary("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql, self.url],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed on {sql!r}: {result.stderr.strip()}")
        return result.stdout.strip()


def _binary(name: str) -> str:
    """A PostgreSQL program from the newest installed server version, else from PATH."""
    found = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1]
    on_path = shutil.which(name)
    if on_path is None:
        raise RuntimeError(
            f"PostgreSQL's `{name}` is missing: apt-get install postgresql (infra/install_test_packages.sh)"
        )
    return on_path


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def local_postgres(
    user: str = "sigma",
    password: str = "sigma-local",
    database: str = "dagster",
    port: int | None = None,
    timeout_s: int = 60,
) -> Iterator[PostgresServer]:
    """Initialise a cluster in a temporary folder, start it on 127.0.0.1 and create `database`.

    Yields the connection settings; stops the server and removes the folder on exit. With `port=None`
    the port is a free one, so parallel test runs never collide.
    """
    if port is None:
        port = free_port()
    elif port_open(port):
        raise RuntimeError(f"{HOST}:{port} is taken: stop the other PostgreSQL server first")
    # Not under pytest's tmp_path: that folder is private to root, and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="sigma-postgres-"))
    data, log = root / "data", root / "server.log"
    (root / "pwfile").write_text(password + "\n")
    if os.geteuid() == 0:
        owner = pwd.getpwnam(SERVER_USER)
        for path in (root, root / "pwfile"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    started = False
    try:
        initdb = [_binary("initdb"), "-D", str(data), "-U", user, f"--pwfile={root / 'pwfile'}"]
        _run(
            _as_server_user([*initdb, "-A", "scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync"]),
            "initdb",
        )
        # Loopback TCP only; the Unix socket stays inside the temporary folder. fsync off: a test
        # server whose data is thrown away, never a production setting.
        options = f"-h {HOST} -p {port} -k {root} -c fsync=off -c full_page_writes=off"
        started = True
        pg_ctl = [_binary("pg_ctl"), "-D", str(data), "-l", str(log), "-o", options]
        _run(_as_server_user([*pg_ctl, "-w", "-t", str(timeout_s), "start"]), "pg_ctl start", log)
        server = PostgresServer(HOST, port, user, password, database)
        _run(
            [_binary("createdb"), "-h", HOST, "-p", str(port), "-U", user, database],
            "createdb",
            env={**os.environ, "PGPASSWORD": password},
        )
        yield server
    finally:
        if started:
            subprocess.run(
                _as_server_user([_binary("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                capture_output=True,
                check=False,
            )
        shutil.rmtree(root, ignore_errors=True)


def _run(command: list[str], what: str, log: Path | None = None, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
        raise RuntimeError(f"{what} failed ({result.returncode}): {result.stderr.strip()}\n{tail}")


if __name__ == "__main__":
    with local_postgres(port=DEFAULT_PG_PORT) as pg:
        print(f"PostgreSQL on {pg.host}:{pg.port}; Ctrl-C stops it. For the deployment's dagster.yaml:")
        for name, value in pg.dagster_env().items():
            print(f"export {name}={value}")
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
