"""The response store: every successful model response, kept on the storage root under a request hash.

A retried or restarted shard answers finished calls from here instead of paying for them again.
Responses are kept in segments (one object per flush, many responses per object) under
`<root>/responses/<namespace>/`; a segment is written atomically and `put_many` returns once its
responses are durable, and the client holds each request's concurrency slot until then, which bounds the
calls a crash makes us pay twice by the concurrency.

Durable means: on a local root, in a segment file (group-committed); on an object store, in the local
journal (`journal.py`: an append and an fdatasync, milliseconds), which is shipped to the storage root as
one segment every `ship_interval_s` (or `max_batch` answers) and replayed by the next store that loads
if the process died first. If the local disk is lost too, what was not shipped yet is lost with it: at
most `ship_interval_s` worth of answers, and never more than `max_unshipped` (a put waits for shipping
beyond that).

Speed: on an object store (any async fsspec filesystem, e.g. s3fs) segments are PUT from the caller's
event loop through a loop-bound async filesystem, with no thread hops; a few PUTs may be in flight at
once, and `load` fetches all segments concurrently.
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
from pathlib import Path
from typing import Any

from upath import UPath

from sigma_assets.data.storage import write_atomic
from sigma_assets.llm.generation import GenerationRequest, Sample
from sigma_assets.llm.journal import Journal, JournalFile, default_journal_dir, journal_folder

SEGMENT_SUFFIX = ".jsonl"
MAX_UNSHIPPED = 4096  # answers journaled but not yet shipped before a put waits for the storage root
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
    next segment (group commit), so the number of PUTs adapts to how fast the storage answers. On an object
    store answers go through the local journal first (module docstring) unless `journal` is False;
    `journal_dir` overrides where it lives.
    """

    def __init__(
        self,
        root: UPath,
        namespace: str,
        max_delay_s: float = 0.05,
        max_batch: int = 1024,
        max_writes: int = 2,
        journal: bool = True,
        journal_dir: Path | None = None,
        ship_interval_s: float = 0.25,
        max_unshipped: int = MAX_UNSHIPPED,
    ):
        self.directory = root / "responses" / namespace
        self.max_delay_s = max_delay_s
        self.max_batch = max_batch
        self.max_writes = max(1, max_writes)
        self.ship_interval_s = ship_interval_s
        self.max_unshipped = max_unshipped
        self._journal: Journal | None = None
        if journal and not path_is_local(self.directory):
            endpoint = (self.directory.storage_options.get("client_kwargs") or {}).get("endpoint_url", "")
            self._journal = Journal(
                journal_folder(journal_dir or default_journal_dir(), f"{self.directory}\x1f{endpoint}")
            )
        self._current: JournalFile | None = None  # the journal file answers are appended to now
        self._sealed: list[JournalFile] = []  # journal files to ship, oldest first
        self._stranded: list[JournalFile] = []  # journal files whose shipping failed for good
        self._unshipped = 0  # answers durable in the journal, not yet on the storage root
        self._sync_waiters: list[tuple[JournalFile, asyncio.Future[None]]] = []
        self._syncer: asyncio.Task[None] | None = None
        self._shipper: asyncio.Task[None] | None = None
        self._ship_now: asyncio.Event | None = None
        self._shipped: asyncio.Event | None = None
        self._ship_error: BaseException | None = None
        self._closing = False
        self.replayed_answers = 0  # answers of a dead process's journal shipped by `load`
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
        if self._journal is not None:
            self._replay_journal(self._journal)
        return self

    def _replay_journal(self, journal: Journal) -> None:
        """Ship the journal files a dead process left (same segment name: shipping twice is harmless)."""
        for data, handle in journal.orphans():
            records = _parse_segment(data)
            if records:
                write_atomic(self.directory / handle.name, data)
                self.segments_written += 1
                self.replayed_answers += len(records)
                self._records.update(records)
            handle.remove()

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
        if self._journal is not None:
            await self._journal_put(self._journal, batch)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for key, sample in batch:
            self._records[key] = sample
        self._pending.append((batch, future))
        self._pending_items += len(batch)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        await future

    # -- the journal path (an object store) ------------------------------------------------------------

    async def _journal_put(self, journal: Journal, batch: list[tuple[str, Sample]]) -> None:
        if self._ship_error is not None:
            raise self._ship_error
        if self._current is not None and self._current.count >= self.max_batch:
            self._sealed.append(self._current)  # full: shipped as it is, the next answers start a file
            self._current = None
        if self._current is None:
            self._current = journal.create(self._new_segment_name())
        current = self._current
        current.append(_encode_segment(batch), len(batch))  # one write: a crash tears at most this put
        for key, sample in batch:
            self._records[key] = sample
        self._unshipped += len(batch)
        self._start_shipper()
        assert self._ship_now is not None and self._shipped is not None
        if current.count >= self.max_batch or self._sealed:
            self._ship_now.set()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sync_waiters.append((current, future))
        if self._syncer is None or self._syncer.done():
            self._syncer = asyncio.get_running_loop().create_task(self._sync_loop())
        await future  # on the local disk: durable
        while self._unshipped > self.max_unshipped:  # the storage root lags: wait for it
            if self._ship_error is not None:
                raise self._ship_error
            self._ship_now.set()
            self._shipped.clear()
            await self._shipped.wait()

    async def _sync_loop(self) -> None:
        """fdatasync the journal files of every waiting put at once (group commit), in a thread."""
        while self._sync_waiters:
            waiters, self._sync_waiters = self._sync_waiters, []
            # A shipped file is durable on the storage root (and may be closed): nothing to sync.
            files = [f for f in {id(f): f for f, _ in waiters}.values() if not f.retired]
            for file in files:
                file.syncing += 1
            try:
                await asyncio.to_thread(_sync_all, files)
            except OSError as exc:
                for _, future in waiters:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in waiters:
                    if not future.done():
                        future.set_result(None)
            finally:
                for file in files:
                    file.syncing -= 1
                    if file.retired and not file.syncing:
                        file.remove()

    def _start_shipper(self) -> None:
        if self._shipper is None or self._shipper.done():
            self._ship_now, self._shipped = asyncio.Event(), asyncio.Event()
            self._shipper = asyncio.get_running_loop().create_task(self._ship_loop())

    async def _ship_loop(self) -> None:
        """Ship journal files: each full one, the current one once `ship_interval_s` old, all on close."""
        assert self._ship_now is not None
        writing: set[asyncio.Task[None]] = set()
        while self._current is not None or self._sealed or writing:
            current = self._current
            wait: float | None = None
            if current is not None:
                wait = current.created + self.ship_interval_s - time.monotonic()
                if wait <= 0 or current.count >= self.max_batch or self._closing:
                    self._sealed.append(current)
                    self._current, wait = None, None
            if self._sealed and len(writing) < self.max_writes:
                task = asyncio.get_running_loop().create_task(self._ship(self._sealed.pop(0)))
                writing.add(task)
                task.add_done_callback(writing.discard)
                continue
            # Wait for a write to end, the current file's deadline, or a nudge (a full file, the close).
            self._ship_now.clear()
            nudge = asyncio.ensure_future(self._ship_now.wait())
            await asyncio.wait([*writing, nudge], timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            nudge.cancel()

    async def _ship(self, file: JournalFile) -> None:
        data = b"".join(file.chunks)
        error: BaseException | None = None
        for attempt in range(SHIP_ATTEMPTS):
            try:
                await self._write_segment_async(data, file.name)
                break
            except Exception as exc:  # the storage root is unreachable: the answers wait in the journal
                error = exc
                await asyncio.sleep(min(8.0, 0.25 * 2**attempt))
        else:
            self._ship_error = RuntimeError(
                f"{file.count} answers are kept in the response journal {file.path} but could not be "
                f"shipped to {self.directory}: {error}; a rerun on this machine ships them"
            )
            self._ship_error.__cause__ = error
            self._stranded.append(file)
        if self._ship_error is None:
            self._unshipped -= file.count
            file.retired = True
            if not file.syncing:
                file.remove()
        assert self._shipped is not None
        self._shipped.set()

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
            await self._write_segment_async(_encode_segment(items))
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

    @staticmethod
    def _new_segment_name() -> str:
        return f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}{SEGMENT_SUFFIX}"

    def warm_up(self) -> None:
        """Open the object-store session in the background now, while the first requests are out: the
        first segment write then does not pay the set-up (hundreds of ms) on top of its requests."""
        fs = self._loop_fs()
        if fs is not None and self._session is None and hasattr(fs, "set_session"):
            self._session = asyncio.get_running_loop().create_task(fs.set_session())

    async def _write_segment_async(self, data: bytes, name: str | None = None) -> None:
        path = self.directory / (name or self._new_segment_name())
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
        write_atomic(self.directory / self._new_segment_name(), _encode_segment(items))
        self.segments_written += 1

    async def aclose(self) -> None:
        """Wait for every pending response to be durable (write errors reach their `put_many` callers) and,
        with a journal, shipped to the storage root (raises if it cannot be: the journal keeps them)."""
        self._closing = True
        if self._shipper is not None and self._ship_now is not None:
            self._ship_now.set()
            await asyncio.wait([self._shipper])
        if self._syncer is not None:
            await asyncio.wait([self._syncer])
        self._closing = False
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
        if self._ship_error is not None:
            for file in self._stranded:  # the next load (in this process too) ships them
                file.release()
            self._stranded.clear()
            raise self._ship_error

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


SHIP_ATTEMPTS = 5  # a journal file's PUT, with backoff from 0.25 s: about 8 s of outage is ridden out


def _sync_all(files: list[JournalFile]) -> None:
    for file in files:
        file.sync()


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
