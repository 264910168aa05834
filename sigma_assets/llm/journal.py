"""A local append-only journal in front of a response store on an object store.

An answer is appended (and fdatasync'ed, group-committed) to a file on the local disk in milliseconds,
instead of waiting for a segment PUT (tens to hundreds of milliseconds); the store ships each journal file
to the storage root as one segment, under the same name, and then deletes it. A file is locked (flock)
by the process writing it, so a store that loads finds the files of a process that died before shipping
(the lock died with it), ships them and deletes them: what the dead process was paid for is not asked
for again. A torn last line (a crash mid-append) is dropped.

Where: `SIGMA_JOURNAL_DIR`, else `$XDG_CACHE_HOME/sigma/journal`, else `~/.cache/sigma/journal`; one
folder per response-store directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


def default_journal_dir() -> Path:
    configured = os.environ.get("SIGMA_JOURNAL_DIR")
    if configured:
        return Path(configured)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "sigma" / "journal"


def journal_folder(base: Path, target: str) -> Path:
    """The journal folder of one store directory (`target`: its URL and endpoint)."""
    return base / hashlib.sha256(target.encode()).hexdigest()[:24]


@dataclass(eq=False)
class JournalFile:
    """One file being appended to; shipped whole as the segment `name`."""

    path: Path
    fd: int
    created: float = field(default_factory=time.monotonic)
    chunks: list[bytes] = field(default_factory=list)
    count: int = 0  # answers in it
    syncing: int = 0  # fdatasync calls in flight on `fd`: it is closed only when none are
    retired: bool = False

    @property
    def name(self) -> str:
        return self.path.name

    def append(self, data: bytes, count: int) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.chunks.append(data)
        self.count += count

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def release(self) -> None:
        """Keep the file but release its lock: the next store that loads ships it."""
        os.close(self.fd)

    def remove(self) -> None:
        """Delete the file (it was shipped) and release its lock."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)


class Journal:
    def __init__(self, folder: Path):
        self.folder = folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(
                f"cannot create the response journal folder {folder} ({exc}); set SIGMA_JOURNAL_DIR to a "
                "writable local folder"
            ) from exc

    def create(self, name: str) -> JournalFile:
        path = self.folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new name: never held by anyone else
        return JournalFile(path, fd)

    def orphans(self) -> Iterator[tuple[bytes, JournalFile]]:
        """Files no live process holds: (their whole lines, a handle to remove them once shipped)."""
        for path in sorted(self.folder.glob("*.jsonl")):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:  # shipped by another loader meanwhile
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a live writer (this process or another) still owns it
                os.close(fd)
                continue
            with open(fd, "rb", closefd=False) as handle:
                data = handle.read()
            whole, _, torn = data.rpartition(b"\n")
            if torn:
                log.warning(f"dropped a torn last line ({len(torn)} bytes) of response journal {path}")
            yield (whole + b"\n" if whole else b""), JournalFile(path, fd)
