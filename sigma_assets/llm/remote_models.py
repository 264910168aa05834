"""Model folders named by URL (`s3://bucket/models/deepseek-math-7b-base`, any fsspec URL), fetched once
into the local model cache and loaded from there.

transformers, vLLM and TRL load local folders, so a base or policy model kept on the storage root is
copied to `<cache>/<name>-<digest>/` first. The digest covers the remote listing (names, sizes, ETags):
a folder uploaded again under the same URL is a new local folder, never a mix of old and new files.

- **Never half a folder.** The copy is built beside its destination and renamed into place once every
  file arrived with its listed size and the completion marker is written (`build_atomically`): a fetch
  killed halfway leaves nothing under the final name, and the next fetch clears what it left.
- **Once per machine.** A file lock serialises the fetchers of one folder on one machine (the processes
  and threads of a pod): the second waits, then finds the folder complete instead of fetching it again.
  In one process a second call is answered from memory, without touching the network.

No Dagster imports.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
from fsspec.callbacks import Callback

from sigma_assets.data.storage import StorageRoot
from sigma_assets.llm.local_models import MARKER, build_atomically, is_complete

# What was fetched, from where: written into the folder before its completion marker.
SOURCE_FILE = ".sigma-source.json"
# Kept beside a trained model's own files (`training/model_files.py`) and never loaded with it.
SKIPPED_PREFIXES = ("checkpoints/",)

# (bytes fetched so far, bytes in the whole folder)
Progress = Callable[[int, int], None]

_fetched: dict[tuple[str, str], Path] = {}
_fetched_lock = threading.Lock()


def is_remote(model: str) -> bool:
    """Whether `model` names a folder by URL (`s3://`, `gs://`, ...) rather than a local path or a hub id."""
    protocol, sep, _ = model.partition("://")
    return bool(sep) and protocol not in ("file", "local")


def storage_options_for(url: str, root: StorageRoot | None) -> dict[str, Any]:
    """The storage root's connection (endpoint, region, keys) for a model URL of the same kind (`s3://`);
    none for another kind, whose filesystem reads its own standard settings."""
    if root is None or url.partition("://")[0] != root.url.partition("://")[0]:
        return {}
    return dict(root.storage_options)


@dataclass(frozen=True)
class RemoteFile:
    path: str  # as the filesystem names it
    name: str  # relative to the folder
    size: int
    version: str  # ETag where the store has one, else the modification time


def list_folder(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, list[RemoteFile]]:
    """The filesystem of `url` and the files of the model folder there, sorted by name."""
    fs, root = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    root = root.rstrip("/")
    files = []
    for path, info in sorted(fs.find(root, detail=True).items()):
        if info.get("type") == "directory":
            continue
        name = path[len(root) :].lstrip("/")
        # A marker uploaded with the folder is not ours to trust: only a finished fetch writes one.
        if not name or name.startswith(SKIPPED_PREFIXES) or name in (MARKER, SOURCE_FILE):
            continue
        version = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified")
        files.append(RemoteFile(path, name, int(info.get("size") or 0), str(version or "")))
    if not files:
        raise FileNotFoundError(f"{url} holds no files: expected a model folder (config.json, weights)")
    return fs, files


def cache_folder(cache_dir: Path, url: str, files: list[RemoteFile]) -> Path:
    """`<cache>/<last part of the URL>-<digest of the listing>`."""
    listing = json.dumps([(f.name, f.size, f.version) for f in files]).encode()
    digest = hashlib.sha256(url.encode() + b"\0" + listing).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", url.rstrip("/").rsplit("/", 1)[-1]).strip("._") or "model"
    return Path(cache_dir) / f"{name}-{digest}"


def fetch_model(
    url: str,
    cache_dir: Path,
    storage_options: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> Path:
    """A complete local copy of the model folder at `url` under `cache_dir`, fetched if not there yet."""
    key = (url, str(Path(cache_dir).resolve()))
    with _fetched_lock:
        known = _fetched.get(key)
    if known is not None and is_complete(known):
        return known
    fs, files = list_folder(url, storage_options)
    dest = cache_folder(Path(cache_dir), url, files)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _folder_lock(dest):
        if not is_complete(dest):
            _remove_leftovers(dest)
            build_atomically(dest, lambda tmp: _download(fs, url, files, tmp, progress))
    with _fetched_lock:
        _fetched[key] = dest
    return dest


@contextmanager
def _folder_lock(dest: Path) -> Iterator[None]:
    # flock locks an open file description: threads that open the file themselves exclude each other too.
    with open(dest.parent / f".lock-{dest.name}", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftovers(dest: Path) -> None:
    """The build folders of fetches that died (`build_atomically` names them `.<dest>.<random>`): with
    the lock held, no live fetch of this folder is writing one."""
    for leftover in dest.parent.glob(f".{dest.name}.*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)


class _Reporter(Callback):
    """fsspec's per-file progress, turned into bytes of the whole folder."""

    def __init__(self, report: Progress, before: int, total: int) -> None:
        super().__init__()
        self._report, self._before, self._total = report, before, total

    def call(self, *args: Any, **kwargs: Any) -> None:
        self._report(self._before + int(self.value), self._total)


def _download(fs: Any, url: str, files: list[RemoteFile], out: Path, progress: Progress | None) -> None:
    total = sum(f.size for f in files)
    done = 0
    for file in files:
        local = out / file.name
        local.parent.mkdir(parents=True, exist_ok=True)
        callback = _Reporter(progress, done, total) if progress else None
        fs.get_file(file.path, str(local), **({"callback": callback} if callback else {}))
        got = local.stat().st_size
        if got != file.size:
            raise OSError(f"{url}: {file.name} arrived with {got} of its {file.size} bytes")
        done += file.size
        if progress:
            progress(done, total)
    source = {"url": url, "files": {f.name: f.size for f in files}}
    (out / SOURCE_FILE).write_text(json.dumps(source, indent=1) + "\n")
