"""Tests for the fault-injecting OpenAI-compatible server, through the real openai client and plain HTTP."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import openai
import pytest

from sigma_assets.testing.fault_server import (
    INVALID_JSON_CONTENT,
    FaultConfig,
    FaultServer,
    FaultServerProcess,
    default_text,
)

MESSAGES = [{"role": "user", "content": "say something"}]


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer(timeout_sleep_s=2.0) as srv:
        yield srv


def client(
    srv: FaultServer | FaultServerProcess, timeout: float = 5.0, api_key: str = "test"
) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, api_key=api_key, max_retries=0, timeout=timeout)


def post(
    url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Plain urllib POST that returns status, headers and raw body, error statuses included."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": MESSAGES, **extra}


def test_chat_and_completion_with_n(server: FaultServer) -> None:
    c = client(server)
    chat = c.chat.completions.create(model="m", messages=MESSAGES, n=3)  # type: ignore[arg-type]
    assert [ch.index for ch in chat.choices] == [0, 1, 2]
    assert all(ch.finish_reason == "stop" and ch.message.role == "assistant" for ch in chat.choices)
    texts = [ch.message.content or "" for ch in chat.choices]
    assert len(set(texts)) == 3 and all(t.startswith("reply ") for t in texts)
    assert chat.usage is not None
    assert chat.usage.prompt_tokens == len("say something") // 4 + 1
    assert chat.usage.completion_tokens == sum(len(t) // 4 + 1 for t in texts)
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens

    comp = c.completions.create(model="m", prompt="once upon a time", n=3, max_tokens=16)
    assert len(comp.choices) == 3 and comp.object == "text_completion"
    assert comp.usage is not None and comp.usage.prompt_tokens == len("once upon a time") // 4 + 1

    # deterministic: the same request gets the same text
    again = c.chat.completions.create(model="m", messages=MESSAGES, n=3)  # type: ignore[arg-type]
    assert [ch.message.content for ch in again.choices] == texts

    models = c.models.list()
    assert [m.id for m in models.data] == ["fault-model"]


def test_scripted_responder() -> None:
    def responder(req: dict[str, Any], i: int) -> str:
        return json.dumps({"score": i, "model": req["model"]})

    with FaultServer(responder=responder) as srv:
        out = client(srv).chat.completions.create(model="critic", messages=MESSAGES, n=2)  # type: ignore[arg-type]
    assert [json.loads(ch.message.content or "") for ch in out.choices] == [
        {"score": 0, "model": "critic"},
        {"score": 1, "model": "critic"},
    ]


def test_forced_429_by_ordinal_has_retry_after(server: FaultServer) -> None:
    server.configure(fail_requests={2: "429"}, retry_after_s=0.25)
    url = f"{server.base_url}/chat/completions"
    assert post(url, chat_body())[0] == 200
    status, headers, body = post(url, chat_body())
    assert status == 429
    assert float(headers["Retry-After"]) == 0.25
    assert json.loads(body)["error"]["code"] == "rate_limit_exceeded"
    assert post(url, chat_body())[0] == 200
    server.configure(fail_requests={4: "429"})
    with pytest.raises(openai.RateLimitError):  # 4th request, forced through the openai client
        client(server).chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert server.stats()["faults"]["429"] == 2


def test_500_truncated_invalid_json_and_length(server: FaultServer) -> None:
    server.configure(fail_requests={1: "500", 2: "truncated", 3: "invalid_json", 4: "length"})
    c = client(server)
    with pytest.raises(openai.InternalServerError):
        c.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]

    status, _, body = post(f"{server.base_url}/chat/completions", chat_body())
    assert status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)

    out = c.chat.completions.create(model="m", messages=MESSAGES, n=2)  # type: ignore[arg-type]
    assert [ch.message.content for ch in out.choices] == [INVALID_JSON_CONTENT] * 2

    req = chat_body()
    full = default_text(req, 0)
    status, _, body = post(f"{server.base_url}/chat/completions", req)
    choice = json.loads(body)["choices"][0]
    assert choice["finish_reason"] == "length"
    assert full.startswith(choice["message"]["content"]) and len(choice["message"]["content"]) < len(full)


def test_timeout_fault_times_out_client(server: FaultServer) -> None:
    server.configure(fail_requests={1: "timeout"}, timeout_sleep_s=2.0)
    with pytest.raises(openai.APITimeoutError):
        client(server, timeout=0.3).chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    # the next request is served normally
    client(server).chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert server.stats()["faults"]["timeout"] == 1


def test_fault_rate_one_and_reproducible_seed() -> None:
    with FaultServer(fault_rate=1.0, fault_kinds=("500",)) as srv:
        c = client(srv)
        for _ in range(3):
            with pytest.raises(openai.InternalServerError):
                c.completions.create(model="m", prompt="x")
        assert srv.stats()["faults"]["500"] == 3

    def statuses(srv: FaultServer) -> list[int]:
        return [post(f"{srv.base_url}/completions", {"model": "m", "prompt": "p"})[0] for _ in range(20)]

    with FaultServer(fault_rate=0.5, fault_kinds=("429", "500"), seed=7) as srv:
        first = statuses(srv)
        srv.reset()  # reset restarts the random sequence
        assert statuses(srv) == first
    assert {200, 429, 500} <= set(first)


async def _burst(base_url: str, count: int) -> list[int]:
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> int:
            async with session.post(f"{base_url}/completions", json={"model": "m", "prompt": str(i)}) as resp:
                await resp.read()
                return resp.status

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def test_stats_count_exactly_and_reset(server: FaultServer) -> None:
    server.configure(latency_s=0.05)
    c = client(server)
    for _ in range(2):
        c.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert asyncio.run(_burst(server.base_url, 20)) == [200] * 20
    c.models.list()

    # over HTTP as well as through the Python API
    with urllib.request.urlopen(f"{server.base_url.removesuffix('/v1')}/stats", timeout=5) as resp:
        stats = json.loads(resp.read())
    assert stats == server.stats()
    assert stats["requests"] == {
        "/v1/chat/completions": 2,
        "/v1/completions": 20,
        "/v1/models": 1,
        "/v1/files": 0,
        "/v1/batches": 0,
    }
    assert stats["total"] == 23
    assert stats["faults_total"] == 0
    assert stats["in_flight"] == 0
    assert 1 < stats["max_in_flight"] <= 20  # the burst overlapped inside the 50 ms latency

    status, _, _ = post(f"{server.base_url.removesuffix('/v1')}/reset", {})
    assert status == 200
    after = server.stats()
    assert after["total"] == 0 and after["max_in_flight"] == 0
    assert set(after["requests"].values()) == {0}


def test_config_endpoint() -> None:
    with FaultServer() as srv:
        root = srv.base_url.removesuffix("/v1")
        status, _, body = post(f"{root}/config", {"fail_requests": {"1": "500"}, "latency_s": 0.01})
        assert status == 200 and json.loads(body)["fail_requests"] == {"1": "500"}
        assert srv.config.fail_requests == {1: "500"} and srv.config.latency_s == 0.01
        assert post(f"{srv.base_url}/chat/completions", chat_body())[0] == 500
        assert post(f"{root}/config", {"fault_kinds": ["nope"]})[0] == 400
        assert post(f"{root}/config", {"no_such_field": 1})[0] == 400
        with pytest.raises(ValueError, match="unknown fault kind"):
            srv.configure(fault_kinds=("bogus",))


def test_api_key_enforced() -> None:
    with FaultServer(api_key="secret") as srv:
        with pytest.raises(openai.AuthenticationError):
            client(srv, api_key="wrong").chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
        assert post(f"{srv.base_url}/completions", {"model": "m", "prompt": "p"})[0] == 401
        out = client(srv, api_key="secret").completions.create(model="m", prompt="p")
        assert len(out.choices) == 1
        assert srv.stats()["unauthorized"] == 2


def test_subprocess_server_starts_answers_and_stops() -> None:
    config = FaultConfig(fail_requests={2: "429"}, api_key="k")
    with FaultServerProcess(config) as proc:
        assert proc.port > 0 and proc.base_url.startswith("http://127.0.0.1:")
        c = client(proc, api_key="k")
        out = c.chat.completions.create(model="m", messages=MESSAGES, n=2)  # type: ignore[arg-type]
        assert len(out.choices) == 2
        with pytest.raises(openai.RateLimitError):
            c.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
        stats = proc.stats()
        assert stats["requests"]["/v1/chat/completions"] == 2 and stats["faults"]["429"] == 1
        proc.configure(fail_requests={}, fault_rate=1.0, fault_kinds=("500",))
        with pytest.raises(openai.InternalServerError):
            c.completions.create(model="m", prompt="p")
        proc.reset()
        assert proc.stats()["total"] == 0
        popen = proc.process
    assert popen is not None and popen.poll() is not None  # SIGTERM ended it
    assert popen.returncode == 0
