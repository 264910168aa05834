"""LLMClient end to end on real parts: the fault server on loopback, the response store on a local folder
or the real S3 server, the openai SDK and the tiny transformers model. No mocks: every fault is one the
fault server really sends over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ports import free_port  # infra/, on the path through conftest
from upath import UPath

from sigma_assets.data.storage import StorageRoot
from sigma_assets.llm.accounting import price_of
from sigma_assets.llm.backends.openai_compat import OpenAIBackend
from sigma_assets.llm.client import LLMClient
from sigma_assets.llm.generation import GenerationRequest, SamplingParams, user
from sigma_assets.llm.response_store import ResponseStore, attempt_key, sample_key
from sigma_assets.llm.retry import RequestFailed, RetrySettings
from sigma_assets.testing.fault_server import FaultServer, FaultServerProcess

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Short backoffs keep the suite fast; the rules under test do not depend on their size.
FAST = RetrySettings(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=5.0, timeout_s=10.0)


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer(timeout_sleep_s=3.0) as srv:
        yield srv


def backend_for(srv: FaultServer, model: str = "fault-model", **kwargs: object) -> OpenAIBackend:
    return OpenAIBackend(model, base_url=srv.base_url, **kwargs)  # type: ignore[arg-type]


def local_store(tmp_path: Path, namespace: str = "test") -> ResponseStore:
    return ResponseStore(UPath(tmp_path / "root"), namespace).load()


def chat(text: str, **params: object) -> GenerationRequest:
    return GenerationRequest(messages=user(text), params=SamplingParams(**params))  # type: ignore[arg-type]


def total(srv: FaultServer) -> int:
    return int(srv.stats()["total"])


# -- retry rules --------------------------------------------------------------------------------------


def test_429_waits_for_retry_after(server: FaultServer) -> None:
    server.configure(retry_after_s=0.5, fail_requests={1: "429"})
    with LLMClient(backend_for(server), retry=FAST) as client:
        started = time.monotonic()
        [[sample]] = client.generate([chat("hi")])
        elapsed = time.monotonic() - started
    assert elapsed >= 0.5  # the backoff is the server's Retry-After, not the 10 ms initial backoff
    assert sample.text.startswith("reply ")
    assert total(server) == 2
    assert client.usage.retries == 1 and client.usage.failures == {"429": 1}


@pytest.mark.parametrize(("fault", "kind"), [("500", "5xx"), ("truncated", "invalid")])
def test_server_error_and_truncated_body_are_retried(server: FaultServer, fault: str, kind: str) -> None:
    server.configure(fail_requests={1: fault, 2: fault})
    with LLMClient(backend_for(server), retry=FAST) as client:
        [[sample]] = client.generate([chat("hi")])
    assert sample.text.startswith("reply ")
    assert total(server) == 3
    assert client.usage.failures == {kind: 2} and client.usage.retries == 2


@pytest.mark.parametrize("where", ["http_client", "client_layer"])
def test_timeout_is_retried(server: FaultServer, where: str) -> None:
    # Either the SDK's own timeout or the client layer's per-call bound gives up on the stalled answer.
    server.configure(timeout_sleep_s=3.0, fail_requests={1: "timeout"})
    if where == "http_client":
        backend, retry = backend_for(server, timeout_s=0.3), FAST
    else:
        backend = backend_for(server)
        retry = RetrySettings(max_attempts=3, initial_backoff_s=0.01, timeout_s=0.3)
    with LLMClient(backend, retry=retry) as client:
        started = time.monotonic()
        [[sample]] = client.generate([chat("hi")])
        assert time.monotonic() - started < 2.5
    assert sample.text.startswith("reply ")
    assert total(server) == 2 and server.stats()["faults"]["timeout"] == 1
    assert client.usage.failures == {"timeout": 1}


def test_a_rejected_answer_is_stored_and_the_next_attempt_is_another_request(tmp_path: Path) -> None:
    seeds: list[object] = []

    def first_answer_invalid(request: dict, index: int) -> str:
        seeds.append(request.get("seed"))
        return "not json {" if len(seeds) == 1 else json.dumps({"answer": len(seeds)})

    request = chat("json please", json_output=True, seed=5)
    with FaultServer(responder=first_answer_invalid) as srv:
        with LLMClient(backend_for(srv), store=local_store(tmp_path), retry=FAST) as client:
            [[sample]] = client.generate([request], validate=lambda s: json.loads(s.text))
        assert json.loads(sample.text) == {"answer": 2} and sample.rejected is None
        assert total(srv) == 2 and client.usage.failures == {"invalid": 1}
        assert seeds[0] == 5 and seeds[1] != 5  # the retry is another request, not the same one again
        key = sample_key("openai", srv.base_url, "fault-model", request, 0)

        # Both answers were paid for, so both are kept: the rejected one with its reason.
        reloaded = local_store(tmp_path)
        rejected, accepted = reloaded.get(key), reloaded.get(attempt_key(key, 2))
        assert rejected is not None and rejected.text == "not json {" and rejected.rejected
        assert accepted is not None and accepted.rejected is None and accepted.text == sample.text

        # A rerun sends nothing: it replays the rejection and the accepted second attempt.
        with LLMClient(backend_for(srv), store=reloaded, retry=FAST) as again:
            [[replayed]] = again.generate([request], validate=lambda s: json.loads(s.text))
        assert total(srv) == 2 and replayed.text == sample.text and again.usage.requests == 0

        # A rerun whose budget the stored rejections already spent fails without sending.
        one = RetrySettings(max_attempts=1, initial_backoff_s=0.01)
        with (
            LLMClient(backend_for(srv), store=local_store(tmp_path), retry=one) as spent,
            pytest.raises(RequestFailed) as info,
        ):
            spent.generate([request], validate=lambda s: json.loads(s.text))
        assert total(srv) == 2 and info.value.answer_rejected and "validation" in info.value.reason


def test_a_failed_request_is_never_sent_again_by_the_same_client(server: FaultServer) -> None:
    server.configure(fault_rate=1.0, fault_kinds=("500",))
    with LLMClient(backend_for(server), retry=FAST) as client:
        for _ in range(3):  # e.g. the per-job resend and the per-problem diagnosis asking again
            with pytest.raises(RequestFailed) as info:
                client.generate([chat("doomed"), chat("doomed too")])
            assert info.value.kind == "5xx" and not info.value.heals
    assert total(server) == 2 * FAST.max_attempts


def test_connection_refused_is_retried_then_fails_naming_the_key() -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens here
    request = chat("hi")
    retry = RetrySettings(max_attempts=3, initial_backoff_s=0.01, timeout_s=5.0)
    with (
        LLMClient(OpenAIBackend("m", base_url=base_url), retry=retry) as client,
        pytest.raises(RequestFailed) as info,
    ):
        client.generate([request])
    assert info.value.key == sample_key("openai", base_url, "m", request, 0)
    assert info.value.attempts == 3
    assert info.value.reason.startswith("connection: ") and len(info.value.reason) > len("connection: ")
    assert client.usage.failures == {"connection": 3} and client.usage.retries == 2


@pytest.mark.parametrize(
    ("server_key", "kwargs", "status"),
    [
        ("right-key", {"api_key": "wrong-key"}, "401"),
        (None, {"extra_body": {"n": "not a number"}}, "400"),  # the server rejects the body
    ],
)
def test_client_errors_are_not_retried(
    server_key: str | None, kwargs: dict[str, object], status: str
) -> None:
    with FaultServer(api_key=server_key) as srv:
        request = chat("hi")
        with (
            LLMClient(backend_for(srv, **kwargs), retry=FAST) as client,
            pytest.raises(RequestFailed) as info,
        ):
            client.generate([request])
        assert total(srv) == 1
    assert info.value.attempts == 1
    assert f"HTTP {status}" in info.value.reason
    assert info.value.key == sample_key("openai", srv.base_url, "fault-model", request, 0)
    assert client.usage.retries == 0


def test_after_max_attempts_the_error_names_key_and_reason(server: FaultServer, tmp_path: Path) -> None:
    server.configure(fault_rate=1.0, fault_kinds=("500",))
    request = GenerationRequest(prompt="2+2=", params=SamplingParams(n=2))
    store = local_store(tmp_path)
    retry = RetrySettings(max_attempts=3, initial_backoff_s=0.01, timeout_s=5.0)
    with (
        LLMClient(backend_for(server), store=store, retry=retry) as client,
        pytest.raises(RequestFailed) as info,
    ):
        client.generate([request])
    error = info.value
    assert error.key == sample_key("openai", server.base_url, "fault-model", request, 0)
    assert error.attempts == 3 and total(server) == 3
    assert error.reason.startswith("5xx: HTTP 500")
    assert error.key[:16] in str(error) and "HTTP 500" in str(error)
    assert len(store) == 0  # nothing was made up in place of the failed call


def test_limiter_backs_off_under_429_and_recovers(server: FaultServer) -> None:
    server.configure(fault_rate=1.0, fault_kinds=("429",), retry_after_s=0.01)
    retry = RetrySettings(max_attempts=2, initial_backoff_s=0.01, timeout_s=5.0)
    with LLMClient(backend_for(server), concurrency=8, retry=retry) as client:
        with pytest.raises(RequestFailed):
            client.generate([chat(f"a{i}") for i in range(8)])
        assert client._limiter is not None
        assert client._limiter.limit == 6  # cut by a quarter, once per burst

        # Right after the burst the server sees the lowered bound ...
        server.configure(fault_rate=0.0, latency_s=0.1)
        server.reset()
        client.generate([chat(f"b{i}") for i in range(8)])
        assert server.stats()["max_in_flight"] <= 6

        # ... and after enough successes the full concurrency is back.
        server.configure(latency_s=0.0)
        client.generate([chat(f"c{i}") for i in range(40)])
        assert client._limiter.limit == 8
        server.configure(latency_s=0.1)
        server.reset()
        client.generate([chat(f"d{i}") for i in range(16)])
        assert server.stats()["max_in_flight"] == 8


# -- response store -----------------------------------------------------------------------------------


def test_store_key_hits_and_misses(server: FaultServer, tmp_path: Path) -> None:
    store = local_store(tmp_path)
    with LLMClient(backend_for(server), store=store, retry=FAST) as client:
        first = client.generate([chat("q", temperature=0.7, n=2, seed=1)])
        assert total(server) == 1

        again = client.generate([chat("q", temperature=0.7, n=2, seed=1)])
        assert total(server) == 1  # the same call is answered from the store
        assert [s.text for s in again[0]] == [s.text for s in first[0]]
        assert all(s.cached is False for s in again[0])  # put in this session, not loaded from storage
        assert client.usage.store_hits == 2

        client.generate([chat("q", temperature=0.8, n=2, seed=1)])
        assert total(server) == 2  # another temperature is another call

        samples_before = client.usage.samples
        three = client.generate([chat("q", temperature=0.7, n=3, seed=1)])
        assert total(server) == 3
        assert client.usage.samples - samples_before == 1  # only sample index 2 was asked for
        assert [s.text for s in three[0][:2]] == [s.text for s in first[0]]
        assert len(three[0]) == 3


def test_store_survives_a_new_client(server: FaultServer, tmp_path: Path) -> None:
    requests = [chat(f"q{i}", n=2, temperature=1.0) for i in range(3)]
    with LLMClient(backend_for(server), store=local_store(tmp_path), retry=FAST) as client:
        first = client.generate(requests)
    assert total(server) == 3

    reloaded = local_store(tmp_path)
    assert len(reloaded) == 6
    with LLMClient(backend_for(server), store=reloaded, retry=FAST) as client:
        second = client.generate(requests)
    assert total(server) == 3
    assert client.usage.store_hits == 6 and client.usage.requests == 0
    assert [[s.text for s in row] for row in second] == [[s.text for s in row] for row in first]
    assert all(s.cached for row in second for s in row)


def test_store_on_s3(server: FaultServer, s3_env: dict[str, str]) -> None:
    root = StorageRoot(
        url=s3_env["SIGMA_STORAGE_URL"],
        endpoint_url=s3_env["AWS_ENDPOINT_URL"],
        region=s3_env["AWS_REGION"],
        access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
        secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"],
    ).prepare()
    requests = [chat(f"s3 q{i}") for i in range(4)]
    with LLMClient(backend_for(server), store=ResponseStore(root.path(), "s3test").load()) as client:
        first = client.generate(requests)
    store = ResponseStore(root.path(), "s3test").load()
    assert len(store) == 4 and store.loaded_segments >= 1
    with LLMClient(backend_for(server), store=store) as client:
        second = client.generate(requests)
    assert total(server) == 4 and client.usage.store_hits == 4
    assert [r[0].text for r in second] == [r[0].text for r in first]


# -- accounting and secrets ---------------------------------------------------------------------------


def test_accounting(tmp_path: Path) -> None:
    with FaultServer(fail_requests={1: "500"}) as srv:
        store = local_store(tmp_path)
        with LLMClient(backend_for(srv, model="gpt-4o-mini"), store=store, retry=FAST) as client:
            client.generate([chat("price me", n=2), chat("and me")])
            client.generate([chat("price me", n=2)])
        usage = client.usage
    assert usage.requests == 3  # two calls and one retry
    assert usage.retries == 1 and usage.failures == {"5xx": 1}
    assert usage.samples == 3 and usage.store_hits == 2
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    prompt_price, completion_price = price_of("gpt-4o-mini")
    expected = (usage.prompt_tokens * prompt_price + usage.completion_tokens * completion_price) / 1e6
    assert usage.cost_usd == pytest.approx(expected) and usage.cost_usd > 0
    metadata = usage.as_metadata("critic/")
    assert metadata["critic/requests"] == 3 and metadata["critic/faults"] == "5xx=1"
    assert metadata["critic/cost_usd"] == round(expected, 6)


def test_api_key_never_leaks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-secret-123"
    for name in (None, "openai", "httpx", "httpcore", "sigma_assets"):
        caplog.set_level(logging.DEBUG, logger=name)
    with FaultServer(api_key=secret, fail_requests={1: "500", 2: "429"}, retry_after_s=0.01) as srv:
        store = local_store(tmp_path)
        with LLMClient(backend_for(srv, api_key=secret), store=store, retry=FAST) as client:
            samples = client.generate([chat("secret?", n=2), GenerationRequest(prompt="and completions")])
        assert srv.stats()["unauthorized"] == 0 and len(samples) == 2
        # A wrong key fails; its error must not echo the key it was sent with either.
        with (
            LLMClient(backend_for(srv, api_key="sk-wrong-456"), retry=FAST) as bad,
            pytest.raises(RequestFailed) as info,
        ):
            bad.generate([chat("nope")])
    assert "sk-wrong-456" not in str(info.value)
    assert any(r.name.startswith(("openai", "httpx", "httpcore")) for r in caplog.records)  # logs were on
    assert secret not in caplog.text
    assert all(secret not in str(v) for v in client.usage.as_metadata().values())
    files = [p for p in (tmp_path / "root").rglob("*") if p.is_file()]
    assert files and all(secret.encode() not in p.read_bytes() for p in files)


# -- crash bound --------------------------------------------------------------------------------------

CRASH_SCRIPT = """
import sys
from upath import UPath
from sigma_assets.llm.backends.openai_compat import OpenAIBackend
from sigma_assets.llm.generation import GenerationRequest
from sigma_assets.llm.client import LLMClient
from sigma_assets.llm.response_store import ResponseStore

base_url, store_dir, count, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
store = ResponseStore(UPath(store_dir), "crash").load()
print("LOADED", len(store), flush=True)
backend = OpenAIBackend("fault-model", base_url=base_url)
with LLMClient(backend, store=store, concurrency=concurrency) as client:
    samples = client.generate([GenerationRequest(prompt=f"problem {i}") for i in range(count)])
print("DONE", sum(len(row) for row in samples), client.usage.requests, client.usage.store_hits, flush=True)
"""


def completions(srv: FaultServerProcess) -> int:
    # Not "total": that also counts the /v1/models probes made while the server starts.
    return int(srv.stats()["requests"]["/v1/completions"])


def test_a_crash_pays_at_most_the_in_flight_requests_twice(tmp_path: Path) -> None:
    count, concurrency = 200, 8
    script = tmp_path / "crash_client.py"
    script.write_text(textwrap.dedent(CRASH_SCRIPT))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
    }
    with FaultServerProcess(latency_s=0.2) as srv:
        args = [
            sys.executable,
            str(script),
            srv.base_url,
            str(tmp_path / "root"),
            str(count),
            str(concurrency),
        ]
        first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while completions(srv) < count // 2:
                assert first.poll() is None, first.communicate()
                assert time.monotonic() < deadline, "the client made no progress"
                time.sleep(0.02)
            first.send_signal(signal.SIGKILL)  # no cleanup, no flush: the worst case
        finally:
            first.kill()
            first.communicate()
        seen_at_kill = completions(srv)
        assert count // 2 <= seen_at_kill < count

        rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
        assert rerun.returncode == 0, rerun.stderr
        lines = dict(line.split(" ", 1) for line in rerun.stdout.splitlines())
        loaded = int(lines["LOADED"])
        done, requests, hits = (int(x) for x in lines["DONE"].split())
        seen_in_all = completions(srv)

    assert done == count and hits == loaded
    assert seen_at_kill - concurrency <= loaded <= seen_at_kill  # durable = answered, minus in flight
    assert seen_in_all <= count + concurrency  # paid twice: at most the calls in flight at the kill
    assert len(ResponseStore(UPath(tmp_path / "root"), "crash").load()) == count
    assert requests == count - loaded


# -- backends -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_both_sdk_transports(transport: str, server: FaultServer) -> None:
    server.configure(fail_requests={1: "500"})
    backend = backend_for(server, transport=transport)
    with LLMClient(backend, retry=FAST) as client:
        rows = client.generate([chat(f"{transport} {i}") for i in range(4)])
        assert backend._client is not None
        assert ("aiohttp" in type(backend._client._client).__name__.lower()) == (transport == "aiohttp")
    assert [len(row) for row in rows] == [1, 1, 1, 1] and total(server) == 5
    with pytest.raises(ValueError, match="transport"):
        backend_for(server, transport="carrier-pigeon")


def test_openai_native_n_and_emulated_n(tmp_path: Path) -> None:
    for chat_kind in (True, False):
        params = SamplingParams(n=3, temperature=1.0, seed=7)
        request = (
            GenerationRequest(messages=user("n?"), params=params)
            if chat_kind
            else GenerationRequest(prompt="n?", params=params)
        )
        with FaultServer() as native, FaultServer(ignore_n=True) as single:
            for srv, calls in ((native, 1), (single, 3)):
                with LLMClient(
                    backend_for(srv), store=local_store(tmp_path, f"n{chat_kind}"), retry=FAST
                ) as c:
                    [samples] = c.generate([request])
                assert len(samples) == 3 and len({s.text for s in samples}) == 3
                assert total(srv) == calls
                # A prompt is billed once per call: once natively, on every call when n is emulated.
                assert [s.prompt_tokens > 0 for s in samples] == [True, calls > 1, calls > 1]


def test_transformers_backend_through_the_client(tiny_model_dir: Path, tmp_path: Path) -> None:
    from sigma_assets.llm.backends.hf_local import TransformersBackend

    params = SamplingParams(n=3, temperature=1.0, max_tokens=12, stop=("a", "e"), seed=3)
    requests = [
        GenerationRequest(prompt="The answer is", params=params),
        GenerationRequest(messages=user("What is 2+2?"), params=params),
    ]
    with LLMClient(TransformersBackend(tiny_model_dir, device="cpu"), store=local_store(tmp_path)) as client:
        first = client.generate(requests)
    assert [len(row) for row in first] == [3, 3]
    assert all("a" not in s.text and "e" not in s.text for row in first for s in row)
    assert all(s.completion_tokens <= 12 for row in first for s in row)
    assert client.usage.requests == 1  # one batched call for both prompts

    backend = TransformersBackend(tiny_model_dir, device="cpu")
    with LLMClient(backend, store=local_store(tmp_path)) as client:
        second = client.generate(requests)
        assert backend._model is None  # a full store hit never loads the model
    assert client.usage.store_hits == 6 and client.usage.requests == 0
    assert [[s.text for s in row] for row in second] == [[s.text for s in row] for row in first]


def test_the_same_sample_twice_in_one_call_is_paid_once(server: FaultServer, tmp_path: Path) -> None:
    request = chat("twice", temperature=1.0, n=2)
    with LLMClient(backend_for(server), store=local_store(tmp_path), retry=FAST) as client:
        rows = client.generate([request, chat("other"), request])
        assert total(server) == 2 and client.usage.samples == 3
        assert [s.text for s in rows[0]] == [s.text for s in rows[2]]  # as a rerun from the store would
        again = client.generate([request, request])  # both from the store this time
    assert total(server) == 2 and [s.text for s in again[1]] == [s.text for s in rows[0]]


def test_agenerate_from_two_event_loops(server: FaultServer) -> None:
    # asyncio.run twice: the limiter must not stay bound to the first (closed) loop.
    server.configure(latency_s=0.02)
    client = LLMClient(backend_for(server), concurrency=2, retry=FAST)
    for run in range(2):
        rows = asyncio.run(client.agenerate([chat(f"loop {run} {i}") for i in range(6)]))
        assert len(rows) == 6
    assert total(server) == 12 and server.stats()["max_in_flight"] <= 2


# -- calls given up on --------------------------------------------------------------------------------


def test_a_closed_connection_is_a_connection_error_not_a_timeout(server: FaultServer) -> None:
    server.configure(fault_rate=1.0, fault_kinds=("closed",))
    with LLMClient(backend_for(server), None, retry=FAST) as client, pytest.raises(RequestFailed) as failed:
        client.generate([chat("hello")])
    assert failed.value.kind == "connection" and failed.value.heals
    assert "connection lost before an answer (ServerDisconnectedError" in failed.value.reason


def test_a_call_given_up_on_is_recorded_and_replayed_and_resent_only_on_repair(
    server: FaultServer, tmp_path: Path
) -> None:
    server.configure(fault_rate=1.0, fault_kinds=("500",))
    with LLMClient(backend_for(server), local_store(tmp_path), retry=FAST) as client:
        with pytest.raises(RequestFailed):
            client.generate([chat("doomed")])
        assert client.gave_up == 1
        assert client.record_failures() == 1  # the stage took its fallback and succeeded
    sent = total(server)
    assert sent == FAST.max_attempts
    server.configure(fault_rate=0.0)
    with LLMClient(backend_for(server), local_store(tmp_path), retry=FAST) as replay:
        with pytest.raises(RequestFailed, match="recorded"):
            replay.generate([chat("doomed")])
        assert replay.gave_up == 0 and replay.record_failures() == 0  # nothing new to record
    assert total(server) == sent  # the replay took the same branch without asking
    with LLMClient(backend_for(server), local_store(tmp_path), retry=FAST, retry_failed=True) as repair:
        [[sample]] = repair.generate([chat("doomed")])
    assert sample.text and total(server) == sent + 1  # the repair asked again, once
    with LLMClient(backend_for(server), local_store(tmp_path), retry=FAST) as after:
        [[again]] = after.generate([chat("doomed")])
    assert again.text == sample.text and total(server) == sent + 1  # the repaired answer now replays
