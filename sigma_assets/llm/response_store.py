"""The response store: every successful model response, kept on the storage root under a request hash.

A retried or restarted shard answers finished calls from here instead of paying for them again.
Responses are appended in segments (one object per flush, many responses per object, group-committed)
under `<root>/responses/<namespace>/`; a segment is written atomically, so a crash loses at most the
responses not yet flushed, and the client holds each request's concurrency slot until its response is
durable, which bounds the calls a crash makes us pay twice by the concurrency.

Speed: on an object store (any async fsspec filesystem, e.g. s3fs) segments are PUT from the caller's
event loop through a loop-bound async filesystem, with no thread hops; a few PUTs may be in flight at
once (each `put_many` waits only for its own segment), and `load` fetches all segments concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, fields
from typing import Any

from upath import UPath

from sigma_assets.data.storage import write_atomic
from sigma_assets.llm.generation import GenerationRequest, Sample

SEGMENT_SUFFIX = ".jsonl"
_SAMPLE_FIELDS = tuple(f.name for f in fields(Sample) if f.name != "cached")


def sample_key(backend: str, endpoint: str, model: str, request: GenerationRequest, index: int) -> str:
    """A hash of everything that shapes sample `index` of `request` (n itself is not: sample 2 of an n=3
    call is sample 2 of an n=5 call)."""
    params = {k: v for k, v in asdict(request.params).items() if k != "n"}
    body: dict[str, Any] = {
        "backend": backend,
        "endpoint": endpoint,
        "model": model,
        "params": params,
        "sample": index,
    }
    if request.prompt is not None:
        body["prompt"] = request.prompt
    else:
        body["messages"] = [[m.role, m.content] for m in request.messages or ()]
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def attempt_key(key: str, attempt: int) -> str:
    """The key of attempt `attempt` (1-based) of the sample keyed `key`: attempt 1 keeps the sample key, so
    stores written before attempts were numbered still answer; later attempts are other requests."""
    if attempt == 1:
        return key
    return hashlib.sha256(f"{key}/attempt/{attempt}".encode()).hexdigest()


def failure_key(key: str, attempt: int) -> str:
    """Where a run that gave up on attempt `attempt` of sample `key`, and still succeeded, records why: a
    replay then takes the branch that run took instead of asking again."""
    return hashlib.sha256(f"{key}/failed/{attempt}".encode()).hexdigest()


class ResponseStore:
    """Key → sample, loaded from all segments of a namespace; `put_many` returns once its samples are durable.

    `max_writes` segment writes may be in flight at once: while they are, new responses gather into the
    next segment (group commit), so the number of PUTs adapts to how fast the storage answers.
    """

    def __init__(
        self,
        root: UPath,
        namespace: str,
        max_delay_s: float = 0.05,
        max_batch: int = 1024,
        max_writes: int = 2,
    ):
        self.directory = root / "responses" / namespace
        self.max_delay_s = max_delay_s
        self.max_batch = max_batch
        self.max_writes = max(1, max_writes)
        self._records: dict[str, Sample] = {}
        # One group per `put_many` call: its items go into one segment, and its future resolves with it.
        self._pending: list[tuple[list[tuple[str, Sample]], asyncio.Future[None]]] = []
        self._pending_items = 0
        self._flusher: asyncio.Task[None] | None = None
        self._writing: set[asyncio.Task[None]] = set()
        self._latency_ewma_s = 0.0
        self._async_fs: Any = None  # an async fsspec filesystem bound to `_async_loop`
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._session: asyncio.Task[Any] | None = None
        self.segments_written = 0
        self.loaded_segments = 0

    # -- reading ---------------------------------------------------------------------------------------

    def load(self) -> ResponseStore:
        for _, data in self._read_segments(self._segment_paths()):
            self.loaded_segments += 1
            self._records.update(_parse_segment(data))
        return self

    def _segment_paths(self) -> list[UPath]:
        fs = self.directory.fs
        # Segments written by another filesystem instance (another process, or our own async one) are
        # invisible to a cached listing.
        fs.invalidate_cache(self.directory.path)
        try:
            return sorted(p for p in self.directory.iterdir() if p.name.endswith(SEGMENT_SUFFIX))
        except (FileNotFoundError, NotADirectoryError):  # a new namespace (object stores say the latter)
            return []

    def _read_segments(self, paths: list[UPath]) -> list[tuple[UPath, bytes]]:
        """Every segment's bytes, in `paths` order; fetched concurrently where the filesystem can."""
        if not paths:
            return []
        if not self.directory.fs.async_impl:
            return [(path, path.read_bytes()) for path in paths]
        contents = self.directory.fs.cat([path.path for path in paths], on_error="raise")
        return [(path, contents[path.path]) for path in paths]

    def get(self, key: str) -> Sample | None:
        return self._records.get(key)

    def samples(self) -> list[Sample]:
        """Every stored answer, rejected ones included (each was paid for)."""
        return list(self._records.values())

    def __len__(self) -> int:
        return len(self._records)

    # -- writing ---------------------------------------------------------------------------------------

    def observe_latency(self, seconds: float) -> None:
        """Feed request latencies: the flush delay is kept to a small share of them (see `_delay`)."""
        self._latency_ewma_s = (
            seconds if not self._latency_ewma_s else 0.9 * self._latency_ewma_s + 0.1 * seconds
        )

    async def put_many(self, items: Iterable[tuple[str, Sample]]) -> None:
        """Add samples and return once all of them are durable on the storage root.

        If the segment holding them cannot be written, the error is raised here and the samples are
        dropped from the store (a rerun must ask for them again).
        """
        batch = list(items)
        if not batch:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for key, sample in batch:
            self._records[key] = sample
        self._pending.append((batch, future))
        self._pending_items += len(batch)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        await future

    def _delay(self) -> float:
        # Waiting lets a segment carry more responses (fewer PUTs, less CPU), but every waiting request
        # holds a concurrency slot: cap the wait at 2% of the typical request latency.
        return min(self.max_delay_s, 0.02 * self._latency_ewma_s)

    async def _flush_loop(self) -> None:
        """Start segment writes while responses are pending; ends when none are (put_many restarts it)."""
        while self._pending:
            delay = self._delay()
            if delay > 0 and self._pending_items < self.max_batch:
                await asyncio.sleep(delay)
            while len(self._writing) >= self.max_writes:
                # Responses arriving meanwhile join the next segment: the group commit.
                await asyncio.wait(self._writing, return_when=asyncio.FIRST_COMPLETED)
            groups: list[tuple[list[tuple[str, Sample]], asyncio.Future[None]]] = []
            count = 0
            while self._pending and (not groups or count + len(self._pending[0][0]) <= self.max_batch):
                group = self._pending.pop(0)
                groups.append(group)
                count += len(group[0])
            self._pending_items -= count
            task = asyncio.get_running_loop().create_task(self._commit(groups))
            self._writing.add(task)
            task.add_done_callback(self._writing.discard)

    async def _commit(self, groups: list[tuple[list[tuple[str, Sample]], asyncio.Future[None]]]) -> None:
        items = [item for batch, _ in groups for item in batch]
        try:
            await self._write_segment_async(items)
        except Exception as exc:
            for batch, future in groups:
                for key, sample in batch:
                    if self._records.get(key) is sample:
                        del self._records[key]  # not durable: a rerun must ask again
                if not future.done():
                    future.set_exception(exc)
            return
        for _, future in groups:
            if not future.done():
                future.set_result(None)

    def _new_segment(self, items: list[tuple[str, Sample]]) -> tuple[UPath, bytes]:
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}{SEGMENT_SUFFIX}"
        return self.directory / name, _encode_segment(items)

    def warm_up(self) -> None:
        """Open the object-store session in the background now, while the first requests are out: the
        first segment write then does not pay the set-up (hundreds of ms) on top of its requests."""
        fs = self._loop_fs()
        if fs is not None and self._session is None and hasattr(fs, "set_session"):
            self._session = asyncio.get_running_loop().create_task(fs.set_session())

    async def _write_segment_async(self, items: list[tuple[str, Sample]]) -> None:
        path, data = self._new_segment(items)
        fs = self._loop_fs()
        if self._session is not None:
            session, self._session = self._session, None
            with contextlib.suppress(Exception):  # a failed set-up is retried by the write itself
                await session
        if fs is None:
            await asyncio.to_thread(write_atomic, path, data)
        else:
            await fs._pipe_file(path.path, data)  # one PUT: atomic
        self.segments_written += 1

    def _loop_fs(self) -> Any:
        """An async twin of the directory's filesystem bound to the running loop, or None (local files)."""
        fs = self.directory.fs
        if not fs.async_impl or path_is_local(self.directory):
            return None
        loop = asyncio.get_running_loop()
        if self._async_fs is None or self._async_loop is not loop:
            self._async_fs = type(fs)(
                **fs.storage_options, asynchronous=True, loop=loop, skip_instance_cache=True
            )
            self._async_loop = loop
            self._session = None
        return self._async_fs

    def _write_segment(self, items: list[tuple[str, Sample]]) -> None:
        path, data = self._new_segment(items)
        write_atomic(path, data)
        self.segments_written += 1

    async def aclose(self) -> None:
        """Wait for every pending response to be durable (write errors reach their `put_many` callers)."""
        while (self._flusher is not None and not self._flusher.done()) or self._writing:
            waiting = [*self._writing]
            if self._flusher is not None and not self._flusher.done():
                waiting.append(self._flusher)
            await asyncio.wait(waiting)
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                await session
        fs, self._async_fs, self._async_loop = self._async_fs, None, None
        creator = getattr(fs, "_s3creator", None)
        if creator is not None and hasattr(creator, "__aexit__"):
            with contextlib.suppress(Exception):
                await creator.__aexit__(None, None, None)

    def compact(self) -> int:
        """Merge all segments of the namespace into one (new segment first, then delete the old ones).

        Merges what the segments hold (not what this instance happens to have loaded), and keeps the
        records in memory. Returns how many segments were merged; a crash in between leaves duplicates,
        which load fine.
        """
        paths = self._segment_paths()
        if len(paths) < 2:
            return 0
        merged: dict[str, Sample] = {}
        for _, data in self._read_segments(paths):
            merged.update(_parse_segment(data))
        self._write_segment(list(merged.items()))
        for key, sample in merged.items():
            self._records.setdefault(key, sample)
        fs = self.directory.fs
        fs.rm([path.path for path in paths])
        fs.invalidate_cache(self.directory.path)
        return len(paths)


def path_is_local(path: UPath) -> bool:
    return path.protocol in ("", "file", "local")


def _encode_segment(items: list[tuple[str, Sample]]) -> bytes:
    dumps = json.dumps
    lines = [
        dumps({"key": key, **{name: getattr(sample, name) for name in _SAMPLE_FIELDS}}, ensure_ascii=False)
        for key, sample in items
    ]
    lines.append("")
    return "\n".join(lines).encode("utf-8")


def _parse_segment(data: bytes) -> dict[str, Sample]:
    records: dict[str, Sample] = {}
    for line in data.decode("utf-8").splitlines():
        if not line:
            continue
        record = json.loads(line)
        key = record.pop("key")
        records[key] = Sample(**record, cached=True)
    return records
