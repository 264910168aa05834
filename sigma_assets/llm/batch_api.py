"""The OpenAI Batch API (half price, 24 h window) as a way to fill the response store.

`run_batches(client, requests, validate)` sends what the store cannot answer yet as ONE batch file, waits
for it, and stores every answer under the very keys the client layer uses (rejected ones with their
reason), so the stage then runs as usual and is answered from the store: nothing downstream changes.

Never twice: before a batch is created, a submission record (the hash of the input file, the uploaded
file id) is written beside the store's segments, and the batch carries that hash in its metadata. A
crashed or retried run recomputes the same input file, finds the record, and resumes polling its batch;
a crash between creating the batch and recording its id is healed by finding the batch by its metadata.
A batch that expires or partly fails leaves the missing answers missing: the next round submits only
those (at most `max_rounds` rounds; what is still missing then goes through the online API).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sigma_assets.data.storage import write_atomic
from sigma_assets.llm.backends.openai_compat import samples_from_completion
from sigma_assets.llm.client import ATTEMPT_SEED_STRIDE, LLMClient, Validator, _rejection
from sigma_assets.llm.generation import GenerationRequest, Sample
from sigma_assets.llm.response_store import attempt_key, sample_key

FINAL_STATUSES = ("completed", "expired", "failed", "cancelled")
METADATA_KEY = "sigma_submission"


@dataclass
class BatchReport:
    rounds: int = 0
    batches_created: int = 0
    batches_resumed: int = 0
    lines_sent: int = 0
    answers_stored: int = 0
    still_missing: int = 0  # left for the online API


@dataclass(frozen=True)
class _Line:
    request: GenerationRequest
    keys: tuple[str, ...]  # first-attempt key per sample index of `todo`
    todo: tuple[int, ...]
    attempt: int

    @property
    def custom_id(self) -> str:
        return attempt_key(self.keys[0], self.attempt)


def run_batches(
    client: LLMClient,
    requests: Sequence[GenerationRequest],
    validate: Validator | None = None,
    poll_s: float = 30.0,
    max_rounds: int = 3,
) -> BatchReport:
    """Fill the store with answers to `requests` through the Batch API (blocking)."""
    return client.run_coroutine(_run(client, requests, validate, poll_s, max_rounds))


async def _run(
    client: LLMClient,
    requests: Sequence[GenerationRequest],
    validate: Validator | None,
    poll_s: float,
    max_rounds: int,
) -> BatchReport:
    if client.store is None or client.backend.name != "openai":
        raise ValueError("the Batch API needs the openai backend and a response store")
    report = BatchReport()
    for _ in range(max_rounds):
        lines = _missing_lines(client, requests, validate)
        if not lines:
            break
        report.rounds += 1
        await _one_batch(client, lines, validate, poll_s, report)
    report.still_missing = sum(len(line.todo) for line in _missing_lines(client, requests, validate))
    return report


def _missing_lines(
    client: LLMClient, requests: Sequence[GenerationRequest], validate: Validator | None
) -> list[_Line]:
    """One line per (request, attempt) the store does not answer, as the client would send them."""
    backend = client.backend
    lines: dict[str, _Line] = {}
    for request in requests:
        keys = [
            sample_key(backend.name, backend.endpoint, backend.model, request, i)
            for i in range(request.params.n)
        ]
        by_attempt: dict[int, list[int]] = {}
        for index, key in enumerate(keys):
            sample, attempt, _ = client._stored(key, validate)
            if sample is None and attempt <= client.retry.max_attempts:
                by_attempt.setdefault(attempt, []).append(index)
        for attempt, todo in sorted(by_attempt.items()):
            line = _Line(request, tuple(keys[i] for i in todo), tuple(todo), attempt)
            lines.setdefault(line.custom_id, line)  # the same request twice is paid once
    return list(lines.values())


async def _one_batch(
    client: LLMClient, lines: list[_Line], validate: Validator | None, poll_s: float, report: BatchReport
) -> None:
    backend: Any = client.backend
    sdk = backend._sdk()
    body = _input_file(backend, lines)
    ledger = _Ledger(client)
    submission, record = ledger.open(hashlib.sha256(body).hexdigest())
    if record.get("batch_id") is None:
        if record.get("input_file_id") is None:
            uploaded = await sdk.files.create(file=("sigma-batch.jsonl", body), purpose="batch")
            record["input_file_id"] = uploaded.id
            ledger.write(submission, record)  # before the batch exists: a retry finds this, not a blank
        batch_id = await _find_batch(sdk, submission)
        if batch_id is None:
            batch = await sdk.batches.create(
                input_file_id=record["input_file_id"],
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={METADATA_KEY: submission},
            )
            batch_id = batch.id
            report.batches_created += 1
            report.lines_sent += len(lines)
        else:
            report.batches_resumed += 1
        record["batch_id"] = batch_id
        ledger.write(submission, record)
    else:
        report.batches_resumed += 1
    batch = await sdk.batches.retrieve(record["batch_id"])
    while batch.status not in FINAL_STATUSES:
        await asyncio.sleep(poll_s)
        batch = await sdk.batches.retrieve(record["batch_id"])
    by_id = {line.custom_id: line for line in lines}
    records: list[tuple[str, Sample]] = []
    if batch.output_file_id:
        content = await sdk.files.content(batch.output_file_id)
        for raw in content.text.splitlines():
            if not raw.strip():
                continue
            result = json.loads(raw)
            line = by_id.get(result.get("custom_id"))
            response = result.get("response") or {}
            if line is None or response.get("status_code") != 200:
                continue  # not ours, or failed: it stays missing and goes in the next round
            samples = samples_from_completion(response["body"])
            client.usage.batch_requests += 1
            for index, sample in zip(line.todo, samples, strict=False):
                reason = _rejection(validate, sample)
                client.usage.batch_prompt_tokens += sample.prompt_tokens
                client.usage.batch_completion_tokens += sample.completion_tokens
                key = attempt_key(line.keys[line.todo.index(index)], line.attempt)
                records.append((key, replace(sample, rejected=reason, batch=True)))
    if records:
        await client.store.put_many(records)  # type: ignore[union-attr]
        report.answers_stored += len(records)
    record["done"] = batch.status
    ledger.write(submission, record)


async def _find_batch(sdk: Any, submission: str) -> str | None:
    """A batch created for `submission` whose id was never recorded (a crash right after creating it)."""
    async for batch in sdk.batches.list(limit=100):
        if (batch.metadata or {}).get(METADATA_KEY) == submission and batch.status != "cancelled":
            return str(batch.id)
    return None


def _input_file(backend: Any, lines: list[_Line]) -> bytes:
    rows = []
    for line in lines:
        params = line.request.params
        seed = params.seed
        if line.attempt > 1:  # the same request the client would send at this attempt
            seed = (seed or 0) + ATTEMPT_SEED_STRIDE * (line.attempt - 1)
        body = backend.request_body(line.request, len(line.todo), seed)
        rows.append(
            {"custom_id": line.custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
        )
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows).encode()


class _Ledger:
    """Submission records beside the store's segments: `<namespace>/batches/<submission>.json`."""

    def __init__(self, client: LLMClient):
        assert client.store is not None
        self.directory = client.store.directory / "batches"

    def open(self, content_hash: str) -> tuple[str, dict[str, Any]]:
        """The submission for this input file: the unfinished one, or a new one after finished ones (the
        same missing lines again after a failed batch are a new submission)."""
        for round_ in range(1000):
            submission = content_hash if round_ == 0 else f"{content_hash}-{round_}"
            record = self.read(submission)
            if record is None:
                return submission, {"created": time.time()}
            if not record.get("done"):
                return submission, record
        raise RuntimeError(f"submission {content_hash[:16]} was tried 1000 times")

    def read(self, submission: str) -> dict[str, Any] | None:
        path = self.directory / f"{submission}.json"
        self.directory.fs.invalidate_cache(self.directory.path)
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            return None

    def write(self, submission: str, record: dict[str, Any]) -> None:
        write_atomic(self.directory / f"{submission}.json", json.dumps(record, sort_keys=True).encode())
