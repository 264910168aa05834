"""The Batch API as a way of sending, below the client, against the fault server's /v1/files and
/v1/batches: completing, expiring and partly failing batches, answers validated and stored like online
ones, and a crash between submitting a batch and its completion."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from upath import UPath

from sigma_assets.llm.accounting import price_of
from sigma_assets.llm.backends.openai_batch import BatchAPIBackend
from sigma_assets.llm.backends.openai_compat import OpenAIBackend
from sigma_assets.llm.client import LLMClient, Prefill
from sigma_assets.llm.generation import GenerationRequest, SamplingParams, user
from sigma_assets.llm.response_store import ResponseStore
from sigma_assets.llm.retry import RetrySettings
from sigma_assets.testing.fault_server import FaultServer, FaultServerProcess

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODEL = "gpt-4o-mini"


def requests(count: int) -> list[GenerationRequest]:
    return [
        GenerationRequest(messages=user(f"batch question {i}"), params=SamplingParams(max_tokens=32, seed=0))
        for i in range(count)
    ]


def client_for(base_url: str, root: Path) -> LLMClient:
    store = ResponseStore(UPath(root), "critic/shard-000").load()
    return LLMClient(OpenAIBackend(MODEL, base_url=base_url), store, retry=RetrySettings(max_attempts=3))


def batches_for(client: LLMClient) -> BatchAPIBackend:
    assert client.store is not None and isinstance(client.backend, OpenAIBackend)
    return BatchAPIBackend(client.backend, client.store.directory / "batches", poll_s=0.01)


def chat_requests(srv: FaultServer) -> int:
    return int(srv.stats()["requests"]["/v1/chat/completions"])


def test_a_completed_batch_fills_the_store_at_half_price(tmp_path: Path) -> None:
    asked = requests(5)
    with FaultServer(model=MODEL) as srv:
        with client_for(srv.base_url, tmp_path) as client:
            batches = batches_for(client)
            report = client.prefill(asked, via=batches)
            assert report == Prefill(asked=5, calls=1, answered=5, still_missing=0)
            assert batches.counts.batches_created == 1 and batches.counts.lines_sent == 5
            rows = client.generate(asked)  # the stage itself: answered from the store
            assert chat_requests(srv) == 0 and all(row[0].text.startswith("reply ") for row in rows)
            usage = client.usage
        assert srv.stats()["batches_created"] == 1 and srv.stats()["batch_lines"] == 5
        prompt_price, completion_price = price_of(MODEL)
        full = (
            usage.batch_prompt_tokens * prompt_price + usage.batch_completion_tokens * completion_price
        ) / 1e6
        assert usage.batch_requests == 5 and usage.cost_usd == pytest.approx(full / 2) and full > 0
        assert usage.prompt_tokens == usage.completion_tokens == 0  # nothing billed at the online price
        # The same answers online would have been sent as these bodies: a rerun sends nothing at all.
        with client_for(srv.base_url, tmp_path) as again:
            assert again.prefill(asked, via=batches_for(again)).asked == 0
            assert [r[0].text for r in again.generate(asked)] == [r[0].text for r in rows]
            assert again.usage.spent_before_usd == pytest.approx(full / 2)
        assert chat_requests(srv) == 0 and srv.stats()["batches_created"] == 1


def test_an_expired_batch_resubmits_only_what_is_missing(tmp_path: Path) -> None:
    asked = requests(6)
    with FaultServer(model=MODEL, batch_outcome="expired") as srv:
        with client_for(srv.base_url, tmp_path) as client:
            first = client.prefill(asked, via=batches_for(client), max_sends=1)
            assert first.answered == 3 and first.still_missing == 3
            assert client.usage.failures == {"batch_expired": 1}
            srv.configure(batch_outcome="completed")
            batches = batches_for(client)
            second = client.prefill(asked, via=batches)
            assert second.asked == 3 and second.still_missing == 0 and batches.counts.lines_sent == 3
            client.generate(asked)
        assert srv.stats()["batch_lines"] == 6 + 3 and chat_requests(srv) == 0


def test_a_partly_failed_batch_resubmits_the_failed_lines_through_the_client_retry(tmp_path: Path) -> None:
    asked = requests(6)
    with FaultServer(model=MODEL, batch_outcome="partial") as srv:
        with client_for(srv.base_url, tmp_path) as client:
            batches = batches_for(client)
            report = client.prefill(asked, via=batches)
            client.generate(asked)
        # Lines 3 and 6 failed in the first batch; the client's retry sent only those two, and both came.
        assert report.calls == 2 and batches.counts.batches_created == 2 and report.still_missing == 0
        assert srv.stats()["batch_lines"] == 6 + 2 and chat_requests(srv) == 0


def fussy_server() -> FaultServer:
    """Answers that fail validation at the first attempt (seed 0), and pass at every later one."""
    return FaultServer(
        model=MODEL, responder=lambda req, i: "no" if req.get("seed") == 0 else "fine sample 0"
    )


def validate(sample) -> None:
    if sample.text != "fine sample 0":
        raise ValueError("not what we want")


def test_a_rejected_batch_answer_is_retried_by_the_client_in_the_next_batch(tmp_path: Path) -> None:
    asked = requests(2)
    with fussy_server() as srv:
        with client_for(srv.base_url, tmp_path) as client:
            report = client.prefill(asked, validate, via=batches_for(client))
            assert report == Prefill(asked=2, calls=2, answered=2, still_missing=0)
            assert client.usage.rejected == 2 and client.usage.failures == {"invalid": 2}
            rows = client.generate(asked, validate)
            assert [r[0].text for r in rows] == ["fine sample 0"] * 2
        assert chat_requests(srv) == 0 and srv.stats()["batches_created"] == 2
        # Stored by the client's code: the rejected first answers with their reason, the accepted second.
        store = ResponseStore(UPath(tmp_path), "critic/shard-000").load()
        assert sorted((s.text, s.rejected, s.batch) for s in store.samples()) == [
            ("fine sample 0", None, True),
            ("fine sample 0", None, True),
            ("no", "not what we want", True),
            ("no", "not what we want", True),
        ]
        # Replayed by the client's code: a new client on the store sends nothing.
        with client_for(srv.base_url, tmp_path) as again:
            assert [r[0].text for r in again.generate(asked, validate)] == ["fine sample 0"] * 2
        assert chat_requests(srv) == 0 and srv.stats()["batches_created"] == 2


def test_what_no_batch_answered_goes_online_with_its_attempt_number(tmp_path: Path) -> None:
    asked = requests(2)
    with fussy_server() as srv, client_for(srv.base_url, tmp_path) as client:
        report = client.prefill(asked, validate, via=batches_for(client), max_sends=1)
        assert report.still_missing == 2 and not client.failed  # not given up on: left for online
        rows = client.generate(asked, validate)  # the next attempt (another seed) goes online
        assert [r[0].text for r in rows] == ["fine sample 0"] * 2 and chat_requests(srv) == 2


def test_a_batch_backend_must_answer_as_the_client_model(tmp_path: Path) -> None:
    with FaultServer(model=MODEL) as srv, client_for(srv.base_url, tmp_path) as client:
        other = OpenAIBackend("gpt-4o", base_url=srv.base_url)
        with pytest.raises(ValueError, match="another model"):
            client.prefill(requests(1), via=BatchAPIBackend(other, UPath(tmp_path) / "b"))


CRASH_CHILD = """
import sys
from upath import UPath
from sigma_assets.llm.backends.openai_batch import BatchAPIBackend
from sigma_assets.llm.backends.openai_compat import OpenAIBackend
from sigma_assets.llm.generation import GenerationRequest, SamplingParams, user
from sigma_assets.llm.client import LLMClient
from sigma_assets.llm.response_store import ResponseStore

base_url, root = sys.argv[1], sys.argv[2]
asked = [
    GenerationRequest(messages=user(f"batch question {i}"), params=SamplingParams(max_tokens=32, seed=0))
    for i in range(8)
]
store = ResponseStore(UPath(root), "critic/shard-000").load()
with LLMClient(OpenAIBackend("gpt-4o-mini", base_url=base_url), store) as client:
    batches = BatchAPIBackend(client.backend, store.directory / "batches", poll_s=0.05)
    report = client.prefill(asked, via=batches)
counts = batches.counts
print("REPORT", counts.batches_created, counts.batches_resumed, report.still_missing, flush=True)
"""


@pytest.mark.parametrize("lost", ["nothing", "the batch id"])
def test_a_crash_after_submitting_resumes_the_same_batch(tmp_path: Path, lost: str) -> None:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CRASH_CHILD))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
    }
    root = tmp_path / "root"
    with FaultServerProcess(model=MODEL, batch_complete_after_s=2.0) as srv:
        args = [sys.executable, str(script), srv.base_url, str(root)]
        child = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while srv.stats()["batches_created"] < 1:
                assert child.poll() is None, child.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.02)
            time.sleep(0.2)  # let it record the batch id and start polling
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.communicate()
        [ledger] = list((root / "responses" / "critic" / "shard-000" / "batches").glob("*.json"))
        if lost == "the batch id":  # as if the crash came between creating the batch and recording it
            record = json.loads(ledger.read_text())
            record.pop("batch_id")
            ledger.write_text(json.dumps(record))
        rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
        assert rerun.returncode == 0, rerun.stderr
        created, resumed, missing = (int(x) for x in rerun.stdout.split("REPORT", 1)[1].split())
        stats = srv.stats()
    assert (created, resumed, missing) == (0, 1, 0)
    assert stats["batches_created"] == 1 and stats["batch_lines"] == 8  # submitted once, never twice
    assert stats["requests"]["/v1/chat/completions"] == 0
    assert len(ResponseStore(UPath(root), "critic/shard-000").load()) == 8
