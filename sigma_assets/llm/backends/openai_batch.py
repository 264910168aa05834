"""The OpenAI Batch API (half price, 24 h window) as a way of sending: one `generate` call is one batch.

`BatchAPIBackend` answers as its online twin (same name, endpoint and model), so the client computes the
same store keys, validates, stores and replays batch answers with the same code as online ones; only the
way of sending differs. Lines that fail or expire come back as `PartialResults`: the client keeps what
arrived and resends the rest (the next batch), within its retry budget.

Never twice: before a batch is created, a submission record (the hash of the input file, the uploaded
file id) is written to `ledger` (beside the store's segments), and the batch carries that hash in its
metadata. A crashed or retried run sends the same requests, so it builds the same input file, finds the
record and resumes polling its batch; a crash between creating the batch and recording its id is healed
by finding the batch by its metadata.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from upath import UPath

from sigma_assets.data.storage import write_atomic
from sigma_assets.llm.backends.openai_compat import OpenAIBackend, samples_from_completion
from sigma_assets.llm.client import PartialResults
from sigma_assets.llm.generation import GenerationRequest, Sample

FINAL_STATUSES = ("completed", "expired", "failed", "cancelled")
METADATA_KEY = "sigma_submission"
MAX_LINES = 50_000  # the Batch API's limit per input file


@dataclass
class BatchCounts:
    batches_created: int = 0
    batches_resumed: int = 0
    lines_sent: int = 0
    lines_answered: int = 0
    lines_failed: int = 0


class BatchAPIBackend:
    """A `Backend` that sends every call as one Batch API file and waits for it."""

    call_timeout_s = None  # a batch may take its whole window: the client must not time it out
    max_batch = MAX_LINES

    def __init__(self, online: OpenAIBackend, ledger: UPath, poll_s: float = 30.0):
        self.online = online
        self.name, self.endpoint, self.model = online.name, online.endpoint, online.model
        self.ledger = _Ledger(ledger)
        self.poll_s = poll_s
        self.counts = BatchCounts()

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        bodies = [self.online.request_body(r, r.params.n, r.params.seed) for r in requests]
        rows_by_id = {_custom_id(i, body): i for i, body in enumerate(bodies)}
        lines = [
            {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": bodies[i]}
            for custom_id, i in rows_by_id.items()
        ]
        data = "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines).encode()
        submission, record = await self._submitted(hashlib.sha256(data).hexdigest(), data, len(lines))
        batch = await self.online._sdk().batches.retrieve(record["batch_id"])
        while batch.status not in FINAL_STATUSES:
            await asyncio.sleep(self.poll_s)
            batch = await self.online._sdk().batches.retrieve(batch.id)
        rows: list[list[Sample] | None] = [None] * len(requests)
        if batch.output_file_id:
            content = await self.online._sdk().files.content(batch.output_file_id)
            for raw in content.text.splitlines():
                if not raw.strip():
                    continue
                result = json.loads(raw)
                index = rows_by_id.get(result.get("custom_id"))
                response = result.get("response") or {}
                if index is None or response.get("status_code") != 200:
                    continue  # not ours, or failed: it stays missing and goes in the next batch
                rows[index] = [replace(s, batch=True) for s in samples_from_completion(response["body"])]
        record["done"] = batch.status  # the same lines again are another submission
        self.ledger.write(submission, record)
        missing = sum(row is None for row in rows)
        self.counts.lines_answered += len(rows) - missing
        self.counts.lines_failed += missing
        if missing:
            raise PartialResults(
                f"batch {batch.id} ended {batch.status} with {missing} of {len(rows)} lines unanswered",
                rows,
                kind=f"batch_{batch.status}",
            )
        return [row for row in rows if row is not None]

    async def _submitted(self, content_hash: str, data: bytes, lines: int) -> tuple[str, dict[str, Any]]:
        """The submission of this input file and its record, holding the batch id: resumed from the
        ledger, or found by its metadata, else created."""
        sdk = self.online._sdk()
        submission, record = self.ledger.open(content_hash)
        if record.get("batch_id") is None:
            if record.get("input_file_id") is None:
                uploaded = await sdk.files.create(file=("sigma-batch.jsonl", data), purpose="batch")
                record["input_file_id"] = uploaded.id
                self.ledger.write(submission, record)  # before the batch exists: a retry finds this
            batch_id = await _find_batch(sdk, submission)
            if batch_id is None:
                created = await sdk.batches.create(
                    input_file_id=record["input_file_id"],
                    endpoint="/v1/chat/completions",
                    completion_window="24h",
                    metadata={METADATA_KEY: submission},
                )
                batch_id = created.id
                self.counts.batches_created += 1
                self.counts.lines_sent += lines
            else:
                self.counts.batches_resumed += 1
            record["batch_id"] = batch_id
            self.ledger.write(submission, record)
        else:
            self.counts.batches_resumed += 1
        return submission, record

    async def close(self) -> None:
        await self.online.close()


def _custom_id(index: int, body: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]
    return f"{index}-{digest}"


async def _find_batch(sdk: Any, submission: str) -> str | None:
    """A batch created for `submission` whose id was never recorded (a crash right after creating it)."""
    async for batch in sdk.batches.list(limit=100):
        if (batch.metadata or {}).get(METADATA_KEY) == submission and batch.status != "cancelled":
            return str(batch.id)
    return None


class _Ledger:
    """Submission records: `<ledger>/<submission>.json`."""

    def __init__(self, directory: UPath):
        self.directory = directory

    def open(self, content_hash: str) -> tuple[str, dict[str, Any]]:
        """The submission for this input file: the unfinished one, or a new one after finished ones (the
        same lines again after a failed batch are a new submission)."""
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
