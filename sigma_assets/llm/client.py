"""The one client layer every model call goes through.

It answers from the response store when it can, sends the rest to a backend with bounded and adaptive
concurrency, retries what is worth retrying (connection errors, timeouts, 429 honouring Retry-After,
5xx, responses that fail validation) with exponential backoff and jitter, and accounts for tokens and
cost. A call that still fails is raised with its request key and reason, never replaced by a default.
Callers may be synchronous (`generate`): the client runs its own event loop in a background thread.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from sigma_assets.llm.accounting import Usage
from sigma_assets.llm.generation import Backend, GenerationRequest, Sample
from sigma_assets.llm.response_store import ResponseStore, sample_key

log = logging.getLogger(__name__)
T = TypeVar("T")

Validator = Callable[[Sample], None]  # raises ValueError (or InvalidResponse) when a sample is unusable


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
    """A request that failed for good; names the response-store key of its first missing sample."""

    def __init__(self, key: str, reason: str, attempts: int):
        super().__init__(f"request {key[:16]} failed after {attempts} attempt(s): {reason}")
        self.key = key
        self.reason = reason
        self.attempts = attempts


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


class LLMClient:
    def __init__(
        self,
        backend: Backend,
        store: ResponseStore | None = None,
        concurrency: int = 16,
        retry: RetrySettings = RetrySettings(),
    ):
        self.backend = backend
        self.store = store
        self.concurrency = concurrency
        self.retry = retry
        self.usage = Usage(model=backend.model)
        self._limiter: AdaptiveLimiter | None = None
        self._limiter_loop: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- synchronous facade ----------------------------------------------------------------------------

    def generate(
        self, requests: Sequence[GenerationRequest], validate: Validator | None = None
    ) -> list[list[Sample]]:
        """Per request, its `n` samples in order (blocking)."""
        return self._run(self.agenerate(requests, validate))

    def close(self) -> None:
        if self._loop is not None:
            self._run(self.aclose())
            self._loop.call_soon_threadsafe(self._loop.stop)
            assert self._thread is not None
            self._thread.join()
            self._loop.close()
            self._loop = None

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="llm-client", daemon=True)
            self._thread.start()
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    # -- asynchronous core -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        if self.store is not None:
            await self.store.aclose()
        await self.backend.close()

    async def agenerate(
        self, requests: Sequence[GenerationRequest], validate: Validator | None = None
    ) -> list[list[Sample]]:
        loop = asyncio.get_running_loop()
        if self._limiter is None or self._limiter_loop is not loop:
            # asyncio primitives belong to one loop; a caller on another loop (asyncio.run twice) gets a
            # fresh limiter that keeps the learned limit.
            previous = self._limiter
            self._limiter = AdaptiveLimiter(self.concurrency)
            if previous is not None:
                self._limiter.limit = previous.limit
            self._limiter_loop = loop
        backend = self.backend
        results: list[list[Sample | None]] = []
        missing: list[_Missing] = []
        asked: set[str] = set()
        duplicates: list[tuple[int, int, str]] = []  # (position, index, key) asked for earlier in this call
        for position, request in enumerate(requests):
            keys = [
                sample_key(backend.name, backend.endpoint, backend.model, request, index)
                for index in range(request.params.n)
            ]
            found = [self.store.get(key) if self.store is not None else None for key in keys]
            self.usage.store_hits += sum(sample is not None for sample in found)
            results.append(list(found))
            todo = []
            for index, sample in enumerate(found):
                if sample is not None:
                    continue
                if keys[index] in asked:
                    # The same sample twice in one call: pay once, and answer both alike, as a rerun
                    # from the store would.
                    duplicates.append((position, index, keys[index]))
                else:
                    asked.add(keys[index])
                    todo.append(index)
            if todo:
                missing.append(_Missing(position, request, keys, todo))
        step = max(1, backend.max_batch)
        batches = [missing[i : i + step] for i in range(0, len(missing), step)]
        outcomes = await asyncio.gather(
            *(self._call(batch, validate) for batch in batches), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        generated: dict[str, Sample] = {}
        for batch, outcome in zip(batches, outcomes, strict=True):
            assert not isinstance(outcome, BaseException)
            for item, samples in zip(batch, outcome, strict=True):
                for index, sample in zip(item.todo, samples, strict=True):
                    results[item.position][index] = sample
                    generated[item.keys[index]] = sample
        for position, index, key in duplicates:
            results[position][index] = generated[key]
        return [[sample for sample in row if sample is not None] for row in results]

    async def _call(self, batch: list[_Missing], validate: Validator | None) -> list[list[Sample]]:
        """Generate the missing samples of a batch, holding a concurrency slot until they are durable."""
        assert self._limiter is not None
        sub_requests = [
            replace(item.request, params=replace(item.request.params, n=len(item.todo))) for item in batch
        ]
        attempt = 0
        while True:
            attempt += 1
            await self._limiter.acquire()
            started = time.monotonic()
            try:
                self.usage.requests += 1
                # An in-process engine cannot be interrupted (its thread would run on, holding the model):
                # only remote calls get a timeout.
                timeout = None if self.backend.endpoint == "local" else self.retry.timeout_s
                samples = await asyncio.wait_for(self.backend.generate(sub_requests), timeout)
                _check_shape(sub_requests, samples)
                if validate is not None:
                    for row in samples:
                        for sample in row:
                            _validated(validate, sample)
                if self.store is not None:
                    self.store.observe_latency(time.monotonic() - started)
                    await self.store.put_many(
                        (item.keys[index], replace(sample, cached=False))
                        for item, row in zip(batch, samples, strict=True)
                        for index, sample in zip(item.todo, row, strict=True)
                    )
                self._limiter.on_success()
                self._account(samples)
                return samples
            except (RetryableError, TimeoutError) as exc:
                error = exc if isinstance(exc, RetryableError) else RequestTimeout("backend call timed out")
                self.usage.fault(error.kind)
                if isinstance(error, RateLimited):
                    self._limiter.on_rate_limited()
                if attempt >= self.retry.max_attempts:
                    raise RequestFailed(
                        batch[0].keys[batch[0].todo[0]], f"{error.kind}: {error}", attempt
                    ) from exc
                self.usage.retries += 1
                delay = self.retry.backoff(attempt, error.retry_after_s)
            except FatalRequestError as exc:
                raise RequestFailed(batch[0].keys[batch[0].todo[0]], str(exc), attempt) from exc
            finally:
                self._limiter.release()
            await asyncio.sleep(delay)

    def _account(self, samples: list[list[Sample]]) -> None:
        for row in samples:
            self.usage.samples += len(row)
            for sample in row:
                self.usage.prompt_tokens += sample.prompt_tokens
                self.usage.completion_tokens += sample.completion_tokens


@dataclass
class _Missing:
    position: int
    request: GenerationRequest
    keys: list[str]
    todo: list[int]


def _check_shape(requests: Sequence[GenerationRequest], samples: list[list[Sample]]) -> None:
    if len(samples) != len(requests) or any(
        len(row) != request.params.n for row, request in zip(samples, requests, strict=False)
    ):
        raise InvalidResponse(
            f"backend returned {[len(r) for r in samples]} samples for n={[r.params.n for r in requests]}"
        )


def _validated(validate: Validator, sample: Sample) -> None:
    try:
        validate(sample)
    except InvalidResponse:
        raise
    except ValueError as exc:
        raise InvalidResponse(f"response failed validation: {exc}") from exc
