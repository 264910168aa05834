"""How long a real inference server takes to answer: time to first token, time per output token, and a
batch of limited capacity, so a simulated server's answers arrive when a real one's would.

A request of `n` samples holds `n` of the batch's `capacity` sequence slots (first come, first served)
for its service time: `ttft_s` + its prompt tokens / `prefill_tokens_per_s` + `tpot_s` x the longest of
its samples in tokens (the samples decode side by side). `time_scale` stretches or shrinks the clock: 1
is real time, 0.01 a hundred times faster, 0 answers at once (service times are still computed and
added up, so the run can be projected onto the real clock afterwards with `projected_wall_s`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class LatencyModel:
    ttft_s: float = 0.05
    prefill_tokens_per_s: float = 20_000.0
    tpot_s: float = 0.02
    capacity: int = 256  # sequences decoded at once
    time_scale: float = 0.0

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.tpot_s < 0 or self.ttft_s < 0 or self.prefill_tokens_per_s <= 0:
            raise ValueError("capacity >= 1, non-negative times and a positive prefill rate are needed")
        if self.time_scale < 0:
            raise ValueError(f"time_scale must be >= 0, got {self.time_scale}")

    def service_s(self, prompt_tokens: int, completion_tokens: list[int]) -> float:
        """Seconds a request holds its slots, on the real clock."""
        return (
            self.ttft_s
            + prompt_tokens / self.prefill_tokens_per_s
            + self.tpot_s * max(completion_tokens, default=0)
        )

    @property
    def sequence_tokens_per_s(self) -> float:
        """Output tokens per second of the whole batch when every slot is busy."""
        return self.capacity / self.tpot_s if self.tpot_s else float("inf")


def projected_wall_s(service_s: float, sequence_s: float, concurrency: int, capacity: int) -> float:
    """The wall clock of a stage on the real clock, from its requests' total service seconds and
    sequence-seconds (service x samples): the client keeps `concurrency` requests in flight, the server
    decodes `capacity` sequences at once; whichever bound is tighter sets the time. It assumes the client
    always has `concurrency` requests to send (many more live trees or problems than that)."""
    return max(service_s / max(1, concurrency), sequence_s / max(1, capacity))


class Batch:
    """The server's sequence slots, on its event loop: `serve` waits for `n` free slots in arrival order,
    holds them for the scaled service time, and returns how long it queued (real-clock seconds)."""

    def __init__(self, model: LatencyModel) -> None:
        self.model = model
        self.free = model.capacity
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def serve(self, n: int, service_s: float) -> float:
        scale = self.model.time_scale
        if scale == 0:
            return 0.0
        n = min(n, self.model.capacity)
        queued = 0.0
        if self._waiting or self.free < n:
            started = time.monotonic()
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append((n, future))
            try:
                await future
            except asyncio.CancelledError:  # the client gave up; slots granted meanwhile go back
                if future.done() and not future.cancelled():
                    self.free += n
                    self._wake()
                raise
            queued = (time.monotonic() - started) / scale
        else:
            self.free -= n
        try:
            await asyncio.sleep(service_s * scale)
        finally:
            self.free += n
            self._wake()
        return queued

    def _wake(self) -> None:
        while self._waiting and self._waiting[0][0] <= self.free:
            n, future = self._waiting.popleft()
            if future.cancelled():
                continue
            self.free -= n
            future.set_result(None)
