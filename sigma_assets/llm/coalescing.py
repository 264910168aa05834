"""Batching for in-process engines: calls that arrive while the engine is busy go out as one batch.

An in-process engine (transformers, `vllm.LLM`) runs one batch at a time and is fastest on large ones,
while the search sends many small calls (one tree's expansion, one tree's rollouts) as its trees advance.
`CoalescingBackend` queues them and hands the engine everything queued, up to its `max_batch`, as soon
as it is free: the engine stays busy with batches as large as the waiting work, and no caller waits for
a round to fill.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sigma_assets.llm.generation import Backend, GenerationRequest, Sample


class CoalescingBackend:
    """A `Backend` that merges concurrent `generate` calls into batches of the wrapped one."""

    def __init__(self, inner: Backend):
        self.inner = inner
        self.name = inner.name
        self.model = inner.model
        self.endpoint = inner.endpoint
        self.max_batch = inner.max_batch
        self.batches = 0  # engine calls made
        self._queue: list[tuple[list[GenerationRequest], asyncio.Future[list[list[Sample]]]]] = []
        self._worker: asyncio.Task[None] | None = None

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        future: asyncio.Future[list[list[Sample]]] = asyncio.get_running_loop().create_future()
        self._queue.append((list(requests), future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # calls made in the same turn of the loop join the first batch
        while self._queue:
            taken: list[tuple[list[GenerationRequest], asyncio.Future[list[list[Sample]]]]] = []
            count = 0
            while self._queue and (not taken or count + len(self._queue[0][0]) <= self.max_batch):
                call = self._queue.pop(0)
                if call[1].done():  # its caller gave up (cancelled) before it was sent
                    continue
                taken.append(call)
                count += len(call[0])
            if not taken:
                continue
            try:
                rows = await self.inner.generate([r for requests, _ in taken for r in requests])
            except Exception as exc:  # every merged call fails alike; each caller retries on its own
                for _, future in taken:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            start = 0
            for requests, future in taken:
                if not future.done():
                    future.set_result(rows[start : start + len(requests)])
                start += len(requests)

    async def close(self) -> None:
        await self.inner.close()
