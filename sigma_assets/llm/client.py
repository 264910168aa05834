"""The one client layer every model call goes through.

It answers from the response store when it can, sends the rest to a backend with bounded and adaptive
concurrency, retries what is worth retrying (connection errors, timeouts, 429 honouring Retry-After,
5xx, responses that fail validation) with exponential backoff and jitter, and accounts for tokens and
cost. A call that still fails is raised with its request key and reason, never replaced by a default.

One retry budget: a sample is sent at most `max_attempts` times, whichever layer asks. A rejected
answer is stored with its reason (it was paid for) and the next attempt is another request (the
attempt number is in its seed and key), so a rerun replays rejections instead of paying for them again;
a request that failed for good is remembered and never sent again by the same client.
Callers may be synchronous (`generate`): the client runs its own event loop in a background thread.
The fault kinds, the retry budget and backoff, and the adaptive concurrency bound are `llm/retry.py`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from sigma_assets.llm.accounting import Usage
from sigma_assets.llm.coalescing import CoalescingBackend
from sigma_assets.llm.generation import Backend, GenerationRequest, Sample
from sigma_assets.llm.response_store import ResponseStore, attempt_key, failure_key, sample_key
from sigma_assets.llm.retry import (  # the backends still import every fault kind from here
    AdaptiveLimiter,
    FatalRequestError,
    InvalidResponse,
    PartialResults,
    RateLimited,
    RequestFailed,
    RequestTimeout,
    RetryableError,
    RetrySettings,
    attempt_seed,
)
from sigma_assets.llm.retry import ConnectionFailed as ConnectionFailed
from sigma_assets.llm.retry import ServerError as ServerError

log = logging.getLogger(__name__)
T = TypeVar("T")

Validator = Callable[[Sample], None]  # raises ValueError (or InvalidResponse) when a sample is unusable


class LLMClient:
    def __init__(
        self,
        backend: Backend,
        store: ResponseStore | None = None,
        concurrency: int = 16,
        retry: RetrySettings = RetrySettings(),
        retry_failed: bool = False,
    ):
        self.backend = backend
        self.store = store
        self.concurrency = concurrency
        # An in-process engine batches: calls in flight together go to it as one batch (up to its
        # `max_batch` requests), so its calls are bounded by that, not by a server's concurrency.
        self._sender: Backend = CoalescingBackend(backend) if backend.max_batch > 1 else backend
        self._max_in_flight = max(concurrency, backend.max_batch)
        self.retry = retry
        # A run that succeeded although it gave up on some calls records those outcomes
        # (`record_failures`), so that a replay takes the same branch; `retry_failed` sends them again.
        self.retry_failed = retry_failed
        self.usage = Usage(model=backend.model)
        # Sample key -> its failure: a request that failed for good is never sent again by this client,
        # whichever layer asks (the per-job resend, the per-problem diagnosis).
        self.failed: dict[str, RequestFailed] = {}
        if store is not None:
            self.usage.spent_before_usd = sum(
                self.usage.price(s.prompt_tokens, s.completion_tokens, batch=s.batch) for s in store.samples()
            )
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

    def run_coroutine(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the client's own event loop (where its store and SDK clients live)."""
        return self._run(coroutine)

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
        results, errors = await self._generate(
            requests, validate, _Send(self._sender, self.retry.max_attempts, remember=True)
        )
        if errors:
            raise min(errors, key=lambda item: item[0])[1]
        return results

    def prefill(
        self,
        requests: Sequence[GenerationRequest],
        validate: Validator | None = None,
        *,
        via: Backend,
        max_sends: int = 3,
    ) -> Prefill:
        """Answer what the store cannot yet through another way of sending (the Batch API), with this
        client's validation, store and accounting, each request at most `max_sends` times (blocking).

        What is still unanswered then is not remembered as failed: a later `generate` sends it through
        the client's own backend, the attempt numbering going on where the prefill stopped."""
        return self._run(self.aprefill(requests, validate, via=via, max_sends=max_sends))

    async def aprefill(
        self,
        requests: Sequence[GenerationRequest],
        validate: Validator | None = None,
        *,
        via: Backend,
        max_sends: int = 3,
    ) -> Prefill:
        for name in ("name", "endpoint", "model"):
            if getattr(via, name) != getattr(self.backend, name):
                raise ValueError(f"{via!r} answers as another model than this client's ({name} differs)")
        missing = self.unanswered(requests, validate)
        requests_before = self.usage.requests
        await self._generate(
            missing, validate, _Send(via, min(max_sends, self.retry.max_attempts), remember=False)
        )
        still_missing = len(self.unanswered(missing, validate))
        return Prefill(
            asked=len(missing),
            calls=self.usage.requests - requests_before,
            answered=len(missing) - still_missing,
            still_missing=still_missing,
        )

    async def _generate(
        self, requests: Sequence[GenerationRequest], validate: Validator | None, send: _Send
    ) -> tuple[list[list[Sample]], list[tuple[int, RequestFailed]]]:
        """Per request its samples, and the failures by request position (the first one per call)."""
        loop = asyncio.get_running_loop()
        if self._limiter is None or self._limiter_loop is not loop:
            # asyncio primitives belong to one loop; a caller on another loop (asyncio.run twice) gets a
            # fresh limiter that keeps the learned limit.
            previous = self._limiter
            self._limiter = AdaptiveLimiter(self._max_in_flight)
            if previous is not None:
                self._limiter.limit = previous.limit
            self._limiter_loop = loop
        backend = self.backend
        if self.store is not None:
            self.store.warm_up()
        results: list[list[Sample | None]] = []
        units: list[_Unit] = []
        failures: list[tuple[int, RequestFailed]] = []  # (position, failure) known without sending
        asked: set[str] = set()
        generated: dict[str, Sample] = {}  # key -> its answer in this call, for duplicates
        duplicates: list[tuple[int, int, str]] = []  # (position, index, key) asked for earlier in this call
        for position, request in enumerate(requests):
            keys = [
                sample_key(backend.name, backend.endpoint, backend.model, request, index)
                for index in range(request.params.n)
            ]
            row: list[Sample | None] = [None] * len(keys)
            by_attempt: dict[int, list[int]] = {}
            for index, key in enumerate(keys):
                if key in asked:
                    # The same sample twice in one call: pay once, and answer both alike, as a rerun
                    # from the store would.
                    duplicates.append((position, index, key))
                    continue
                asked.add(key)
                known = self.failed.get(key)
                if known is not None:  # failed for good earlier in this client: never sent again
                    failures.append((position, known))
                    continue
                sample, attempt, reason = self._stored(key, validate)
                recorded = self._recorded_failure(key, attempt) if sample is None else None
                if recorded is not None:  # a run that succeeded gave up here: take the same branch
                    self.failed[key] = recorded
                    failures.append((position, recorded))
                elif sample is not None:
                    row[index] = generated[key] = sample
                    self.usage.store_hits += 1
                elif attempt > self.retry.max_attempts:
                    reason = f"invalid: response failed validation: {reason} (stored)"
                    failed = RequestFailed(key, reason, attempt - 1, kind="invalid")
                    self.failed[key] = failed
                    failures.append((position, failed))
                else:
                    by_attempt.setdefault(attempt, []).append(index)
            results.append(row)
            for attempt, todo in sorted(by_attempt.items()):
                units.append(_Unit(position, request, keys, todo, attempt))
        step = max(1, send.sender.max_batch)
        batches = [units[i : i + step] for i in range(0, len(units), step)]
        outcomes = await asyncio.gather(
            *(self._call(batch, validate, results, generated, send) for batch in batches),
            return_exceptions=True,
        )
        # Every call has finished (what arrived is stored): the failures, by request position.
        errors: list[tuple[int, Any]] = [
            (batch[0].position, o) for batch, o in zip(batches, outcomes, strict=True) if o is not None
        ]
        if any(not isinstance(error, RequestFailed) for _, error in errors):  # a bug or a store failure
            raise next(error for _, error in errors if not isinstance(error, RequestFailed))
        errors += failures
        for position, index, key in duplicates:
            results[position][index] = generated.get(key)
        return [[sample for sample in row if sample is not None] for row in results], errors

    def unanswered(
        self, requests: Sequence[GenerationRequest], validate: Validator | None = None
    ) -> list[GenerationRequest]:
        """The requests some sample of which the store cannot answer (what a call would still send)."""
        backend = self.backend
        return [
            request
            for request in requests
            if any(
                self._stored(sample_key(backend.name, backend.endpoint, backend.model, request, i), validate)[
                    0
                ]
                is None
                for i in range(request.params.n)
            )
        ]

    def _recorded_failure(self, key: str, attempt: int) -> RequestFailed | None:
        if self.store is None or self.retry_failed or attempt > self.retry.max_attempts:
            return None
        record = self.store.get(failure_key(key, attempt))
        if record is None or record.rejected is None:
            return None
        return RequestFailed(
            key, f"{record.rejected} (recorded)", attempt, kind=record.rejected.split(":", 1)[0]
        )

    @property
    def gave_up(self) -> int:
        """Calls this client gave up on after its retries (not those replayed from a record)."""
        return sum(failure.attempt is not None for failure in self.failed.values())

    def record_failures(self) -> int:
        """Record in the store every call this client gave up on (blocking); returns how many.

        Called once the stage that made them has succeeded (its fallbacks taken): a replay must not ask
        again. A stage that failed records nothing, so its retry sends those calls again."""
        items = [
            (failure_key(key, failure.attempt), Sample("", rejected=failure.reason))
            for key, failure in self.failed.items()
            if failure.attempt is not None
        ]
        if items and self.store is not None:
            self._run(self.store.put_many(items))
        return len(items)

    def stored_completion_tokens(self) -> list[int]:
        """Completion tokens of every answer stored for this role and shard: the running mean's data."""
        return [s.completion_tokens for s in self.store.samples()] if self.store is not None else []

    def _stored(self, key: str, validate: Validator | None) -> tuple[Sample | None, int, str | None]:
        """The first stored attempt the validator accepts, else the attempt to send next (and why the
        last stored one was rejected). The current validator decides, so a looser one reuses answers."""
        reason = None
        if self.store is None:
            return None, 1, None
        for attempt in range(1, self.retry.max_attempts + 1):
            sample = self.store.get(attempt_key(key, attempt))
            if sample is None:
                return None, attempt, reason
            reason = _rejection(validate, sample)
            if reason is None:
                return (sample if sample.rejected is None else replace(sample, rejected=None)), attempt, None
        return None, self.retry.max_attempts + 1, reason

    async def _call(
        self,
        batch: list[_Unit],
        validate: Validator | None,
        results: list[list[Sample | None]],
        generated: dict[str, Sample],
        send: _Send,
    ) -> RequestFailed | None:
        """Generate the samples of a batch, holding a concurrency slot until each answer is durable.

        Every send counts against `max_attempts`, whatever layer asks: a fault resends the same
        request, a rejected answer is stored with its reason and the next attempt is another request
        (the attempt number is in its seed and key). Returns the failure of a unit that ran out of sends.
        """
        assert self._limiter is not None
        pending = list(batch)
        while True:
            await self._limiter.acquire()
            sub_requests = [unit.sub_request() for unit in pending]
            for unit in pending:
                unit.sends += 1
            delay = 0.0
            started = time.monotonic()
            try:
                self.usage.requests += 1
                # An in-process engine cannot be interrupted (its thread would run on, holding the model),
                # and a batch takes its window: only calls to a server get a timeout.
                timeout = getattr(send.sender, "call_timeout_s", self.retry.timeout_s)
                if self.backend.endpoint == "local":
                    timeout = None
                partial: PartialResults | None = None
                try:
                    async with asyncio.timeout(timeout):
                        rows: list[list[Sample] | None] = list(await send.sender.generate(sub_requests))
                except PartialResults as exc:  # some rows came back: keep them, resend the rest
                    partial, rows = exc, exc.rows
                _check_shape(sub_requests, rows)
                self.usage.answered(rows)  # every answer that arrived was paid for, rejected or not
                records: list[tuple[str, Sample]] = []
                still: list[_Unit] = []
                for unit, row in zip(pending, rows, strict=True):
                    if row is None:
                        assert partial is not None
                        unit.error, unit.kind = f"{partial.kind}: {partial}", partial.kind
                        still.append(unit)
                        continue
                    rejected: list[int] = []
                    for index, sample in zip(unit.todo, row, strict=True):
                        key = attempt_key(unit.keys[index], unit.attempt)
                        reason = _rejection(validate, sample)
                        records.append((key, replace(sample, cached=False, rejected=reason)))
                        if reason is None:
                            accepted = replace(sample, cached=False)
                            results[unit.position][index] = generated[unit.keys[index]] = accepted
                            self.usage.samples += 1
                        else:
                            rejected.append(index)
                            unit.error = f"invalid: response failed validation: {reason}"
                            unit.kind = "invalid"
                    if rejected:
                        self.usage.fault("invalid")
                        self.usage.rejected += len(rejected)
                        unit.todo, unit.attempt = rejected, unit.attempt + 1
                        still.append(unit)
                if self.store is not None:
                    self.store.observe_latency(time.monotonic() - started)
                    await self.store.put_many(records)
                self._limiter.on_success()
                pending = still
                if partial is not None:
                    self.usage.fault(partial.kind)
                    delay = self.retry.backoff(pending[0].sends, None)
            except (RetryableError, TimeoutError) as exc:
                error = exc if isinstance(exc, RetryableError) else RequestTimeout("backend call timed out")
                self.usage.fault(error.kind)
                if isinstance(error, RateLimited):
                    self._limiter.on_rate_limited()
                for unit in pending:
                    unit.error, unit.kind = f"{error.kind}: {error}", error.kind
                delay = self.retry.backoff(pending[0].sends, error.retry_after_s)
            except FatalRequestError as exc:
                for unit in pending:
                    unit.error, unit.kind = str(exc), "fatal"
            finally:
                self._limiter.release()
            if not pending:
                return None
            spent = [u for u in pending if u.sends >= send.max_sends or u.kind == "fatal"]
            if spent:
                return self._give_up(spent, batch, send.remember)
            self.usage.retries += 1
            if delay:
                await asyncio.sleep(delay)

    def _give_up(self, spent: list[_Unit], batch: list[_Unit], remember: bool) -> RequestFailed:
        """Remember every unfinished sample of the batch as failed, so no layer above sends it again."""
        first = spent[0]
        failure = RequestFailed(
            first.keys[first.todo[0]], first.error, first.sends, first.kind, first.attempt
        )
        if not remember:
            return failure
        for unit in batch:
            for index in unit.todo:
                key = unit.keys[index]
                if key not in self.failed:
                    reason = unit.error or failure.reason
                    self.failed[key] = RequestFailed(key, reason, unit.sends, unit.kind, unit.attempt)
        return failure


@dataclass
class _Unit:
    """Samples of one request still to generate, all at the same attempt number (1-based)."""

    position: int
    request: GenerationRequest
    keys: list[str]  # per sample index, the key of its first attempt
    todo: list[int]
    attempt: int = 1
    sends: int = 0
    error: str = ""
    kind: str = ""

    def __post_init__(self) -> None:
        self.sends = self.attempt - 1  # rejected attempts of earlier runs were sends too

    def sub_request(self) -> GenerationRequest:
        params = self.request.params
        seed = attempt_seed(params.seed, self.attempt)
        return replace(self.request, params=replace(params, n=len(self.todo), seed=seed))


@dataclass(frozen=True)
class _Send:
    """How one call sends: through which backend, at most how often per sample, and whether a request
    that ran out of sends is remembered as failed (never for a prefill)."""

    sender: Backend
    max_sends: int
    remember: bool


@dataclass(frozen=True)
class Prefill:
    asked: int  # requests the store could not answer
    calls: int  # calls made (a Batch API call is one batch)
    answered: int  # requests answered in full
    still_missing: int  # left for the client's own backend


def _check_shape(requests: Sequence[GenerationRequest], samples: Sequence[list[Sample] | None]) -> None:
    if len(samples) != len(requests) or any(
        row is not None and len(row) != request.params.n
        for row, request in zip(samples, requests, strict=False)
    ):
        lengths = [None if r is None else len(r) for r in samples]
        raise InvalidResponse(f"backend returned {lengths} samples for n={[r.params.n for r in requests]}")


def _rejection(validate: Validator | None, sample: Sample) -> str | None:
    """Why `validate` rejects `sample`, or None when it is usable."""
    if validate is None:
        return None
    try:
        validate(sample)
    except ValueError as exc:  # InvalidResponse too
        return str(exc) or type(exc).__name__
    return None
