"""What a failed model call is, and how the client answers it: retry or give up, wait, throttle.

The fault kinds a backend raises (`RetryableError` and its kinds, `FatalRequestError`, `PartialResults`
for a call that answered only some of its requests), `RequestFailed` for a call that failed for good,
the retry budget and backoff (`RetrySettings`: exponential with jitter, honouring Retry-After), and the
adaptive concurrency bound (`AdaptiveLimiter`: shrinks under rate limiting, grows back on success), and
the seed of each attempt (`attempt_seed`: a rejected answer's next attempt is another request).
The client (`llm/client.py`) applies them; the backends raise them.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from dataclasses import dataclass

from sigma_assets.llm.generation import Sample


class RetryableError(RuntimeError):
    """A fault worth another attempt. `kind` names it for accounting ("429", "500", "timeout", ...)."""

    kind = "error"

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimited(RetryableError):
    kind = "429"


class ServerError(RetryableError):
    kind = "5xx"


class RequestTimeout(RetryableError):
    kind = "timeout"


class ConnectionFailed(RetryableError):
    kind = "connection"


class InvalidResponse(RetryableError):
    kind = "invalid"


class FatalRequestError(RuntimeError):
    """A fault another attempt cannot fix (bad request, authentication): raised at once."""


class RequestFailed(RuntimeError):
    """A request that failed for good; names the response-store key of its first missing sample.

    `kind` says why (the fault kinds above, or "fatal"); by default the prefix of `reason`.
    """

    def __init__(
        self, key: str, reason: str, attempts: int, kind: str | None = None, attempt: int | None = None
    ):
        super().__init__(f"request {key[:16]} failed after {attempts} attempt(s): {reason}")
        self.key = key
        self.reason = reason
        self.attempts = attempts
        self.kind = kind if kind is not None else reason.split(":", 1)[0]
        self.attempt = attempt  # the attempt number it gave up on (None: replayed, or invalid answers)

    @property
    def answer_rejected(self) -> bool:
        """The server answered, but no answer passed validation: another prompt may do better."""
        return self.kind == "invalid"

    @property
    def heals(self) -> bool:
        """A lost connection may heal by itself; anything else would fail the same way again."""
        return self.kind == "connection"


@dataclass(frozen=True)
class RetrySettings:
    max_attempts: int = 6
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    timeout_s: float = 300.0  # per backend call; a batched local call covers many prompts

    def backoff(self, attempt: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return min(self.max_backoff_s, retry_after_s)
        base = min(self.max_backoff_s, self.initial_backoff_s * 2 ** (attempt - 1))
        return base * random.uniform(0.5, 1.0)  # jitter keeps retries of one burst from colliding


# A seed stride per attempt, far from the small offsets callers use for their own resamples.
ATTEMPT_SEED_STRIDE = 100_003


def attempt_seed(seed: int | None, attempt: int) -> int | None:
    """The seed of a request's `attempt` (1-based): from the second on another request, also for an
    unseeded one (the server sees another body)."""
    return seed if attempt == 1 else (seed or 0) + ATTEMPT_SEED_STRIDE * (attempt - 1)


class AdaptiveLimiter:
    """A concurrency bound that shrinks under rate limiting and grows back on success (AIMD).

    Decreases are gentle (x0.75) and at most one per cooldown, so a stray 429 among thousands of
    requests costs little; sustained throttling still walks the bound down. Acquire and release are
    cheap (no lock: the event loop runs one coroutine at a time), since every request pays them.
    """

    DECREASE = 0.75
    INCREASE = 0.25  # per success: a quarter of the lost slots back per successful request
    COOLDOWN_S = 2.0

    def __init__(self, maximum: int):
        self.maximum = maximum
        self.limit = float(maximum)
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._last_decrease = -float("inf")

    def _capacity(self) -> int:
        return max(1, int(self.limit))

    async def acquire(self) -> None:
        if self.in_flight < self._capacity() and not self._waiters:
            self.in_flight += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # the releaser hands its slot over (in_flight already counts us)
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self._capacity():
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)

    def on_rate_limited(self) -> None:
        now = time.monotonic()
        if now - self._last_decrease > self.COOLDOWN_S:
            self.limit = max(1.0, self.limit * self.DECREASE)
            self._last_decrease = now

    def on_success(self) -> None:
        if self.limit < self.maximum:
            self.limit = min(float(self.maximum), self.limit + self.INCREASE)
            self._wake()


class PartialResults(RetryableError):
    """A backend call that answered only some of its requests (a batch that expired or partly failed):
    `rows[i]` is request i's samples, or None; the client keeps the rows and resends the rest."""

    def __init__(self, message: str, rows: list[list[Sample] | None], kind: str):
        super().__init__(message)
        self.rows = rows
        self.kind = kind
