"""The response store: every successful model response, kept on the storage root under a request hash.

A retried or restarted shard answers finished calls from here instead of paying for them again.
Responses are appended in segments (one object per flush, many responses per object, group-committed)
under `<root>/responses/<namespace>/`; a segment is written atomically, so a crash loses at most the
responses not yet flushed, and the client holds each request's concurrency slot until its response is
durable, which bounds the calls a crash makes us pay twice by the concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from upath import UPath

from sigma_assets.generation import GenerationRequest, Sample
from sigma_assets.storage import write_atomic

SEGMENT_SUFFIX = ".jsonl"


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


class ResponseStore:
    """Key → sample, loaded from all segments of a namespace; `put` returns once the sample is durable."""

    def __init__(self, root: UPath, namespace: str, max_delay_s: float = 0.05, max_batch: int = 1024):
        self.directory = root / "responses" / namespace
        self.max_delay_s = max_delay_s
        self.max_batch = max_batch
        self._records: dict[str, Sample] = {}
        self._pending: list[tuple[str, Sample, asyncio.Future[None] | None]] = []
        self._wakeup: asyncio.Event | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._latency_ewma_s = 0.0
        self.segments_written = 0
        self.loaded_segments = 0

    # -- reading ---------------------------------------------------------------------------------------

    def load(self) -> ResponseStore:
        for path in self._segment_paths():
            self.loaded_segments += 1
            for line in path.read_bytes().decode("utf-8").splitlines():
                record = json.loads(line)
                key = record.pop("key")
                self._records[key] = Sample(**record, cached=True)
        return self

    def _segment_paths(self) -> list[UPath]:
        try:
            return sorted(p for p in self.directory.iterdir() if p.name.endswith(SEGMENT_SUFFIX))
        except (FileNotFoundError, NotADirectoryError):  # S3 reports a missing prefix as "not a directory"
            return []

    def get(self, key: str) -> Sample | None:
        return self._records.get(key)

    def __len__(self) -> int:
        return len(self._records)

    # -- writing ---------------------------------------------------------------------------------------

    def observe_latency(self, seconds: float) -> None:
        """Feed request latencies: the flush delay is kept to a small share of them (see `_delay`)."""
        self._latency_ewma_s = (
            seconds if not self._latency_ewma_s else 0.9 * self._latency_ewma_s + 0.1 * seconds
        )

    async def put_many(self, items: Iterable[tuple[str, Sample]]) -> None:
        """Add samples and return once all of them are durable on the storage root."""
        batch = list(items)
        if not batch:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for index, (key, sample) in enumerate(batch):
            self._records[key] = sample
            # Segments are written in order, so the batch is durable when its last item is.
            self._pending.append((key, sample, future if index == len(batch) - 1 else None))
        self._ensure_flusher()
        await future

    def _ensure_flusher(self) -> None:
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        self._wakeup.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    def _delay(self) -> float:
        # Waiting lets a segment carry more responses (fewer PUTs, less CPU), but every waiting request
        # holds a concurrency slot: cap the wait at 2% of the typical request latency.
        return min(self.max_delay_s, 0.02 * self._latency_ewma_s)

    async def _flush_loop(self) -> None:
        assert self._wakeup is not None
        while True:
            if not self._pending:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=1.0)
                except TimeoutError:
                    return
                continue
            delay = self._delay()
            if delay > 0 and len(self._pending) < self.max_batch:
                await asyncio.sleep(delay)
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            try:
                await asyncio.to_thread(self._write_segment, [(k, s) for k, s, _ in batch])
            except Exception as exc:
                for key, _, future in batch:
                    self._records.pop(key, None)  # not durable: a rerun must ask again
                    if future is not None and not future.done():
                        future.set_exception(exc)
                continue
            for _, _, future in batch:
                if future is not None and not future.done():
                    future.set_result(None)

    def _write_segment(self, items: list[tuple[str, Sample]]) -> None:
        lines = []
        for key, sample in items:
            record = asdict(sample)
            record.pop("cached")
            lines.append(json.dumps({"key": key, **record}, ensure_ascii=False))
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}{SEGMENT_SUFFIX}"
        write_atomic(self.directory / name, ("\n".join(lines) + "\n").encode("utf-8"))
        self.segments_written += 1

    async def aclose(self) -> None:
        """Wait for every pending response to be durable."""
        while self._pending or (self._flusher is not None and not self._flusher.done()):
            if self._pending:
                self._ensure_flusher()
            if self._flusher is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(self._flusher), timeout=0.1)

    def compact(self) -> int:
        """Merge all segments of the namespace into one (new segment first, then delete the old ones).

        Returns how many segments were merged; a crash in between leaves duplicates, which load fine.
        """
        paths = self._segment_paths()
        if len(paths) < 2:
            return 0
        self._write_segment(list(self._records.items()))
        for path in paths:
            path.unlink()
        return len(paths)
