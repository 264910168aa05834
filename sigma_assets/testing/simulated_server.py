"""An OpenAI-compatible server that answers like a real policy server and a real critic API: the text of
`simulated_policy` and `simulated_critic`, token counts in `usage`, vLLM's `stop_reason`, and the timing
of `latency_model`, on 127.0.0.1 only.

- `POST /v1/completions`: the policy. A request with a stop string (the search's expansion) gets one step
  per sample, a request without (a rollout) the rest of the solution; `n` is honoured, `seed` makes the
  answers repeatable, `max_tokens` cuts a sample (finish "length"). A sample that ends at the delimiter
  has `stop_reason` "\\n\\n"; one where the model ended the text (after its answer) has `stop_reason`
  null, as vLLM reports it.
- `POST /v1/chat/completions`: the critic when the model is `critic_model` (path critique JSON, path
  revision), else the policy answering a whole problem (evaluation).
- `GET /v1/models`, `GET /stats` (per kind of request: requests, samples, tokens, service seconds on the
  real clock, sequence-seconds, seconds queued for the batch, samples cut at `max_tokens`; the server's
  own CPU seconds), `POST /reset`.

Tokens are characters / `chars_per_token` of the role: 2.6 for the policy (what SmolLM2's tokenizer
gives on the real math solutions; like Qwen2.5's, it splits digits) and 4 for the critic (the project's
own estimate for GPT-4o-mini, `llm.budget.CHARS_PER_TOKEN`).

`SimulatedServerProcess` runs it in a child process, so its CPU is never counted as the client's;
`SimulatedServer` in a thread of this process; `python -m sigma_assets.testing.simulated_server
--config-json '{...}'` in the foreground.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import resource
import select
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from aiohttp import web

from sigma_assets.testing.latency_model import Batch, LatencyModel
from sigma_assets.testing.loopback import LoopbackServer, serve_until_signalled
from sigma_assets.testing.simulated_critic import SimulatedCritic
from sigma_assets.testing.simulated_policy import (
    SimulatedPolicy,
    problem_and_depth,
    real_policy_style,
    seeded,
)

READY_PREFIX = "SIMULATED_SERVER_READY "
KINDS = ("step", "rollout", "critique", "revision", "eval")
# A hosted API: a slower first token than a local server, fast decoding, practically unbounded batch.
CRITIC_LATENCY = LatencyModel(ttft_s=0.4, prefill_tokens_per_s=50_000.0, tpot_s=0.012, capacity=100_000)


@dataclass
class SimulatedConfig:
    problems_file: str | None = None  # jsonl with `problem` and `answer`: the golds the policy knows
    critic_model: str = "gpt-4o-mini"
    policy_chars_per_token: float = 2.6
    critic_chars_per_token: float = 4.0
    policy_latency: LatencyModel = field(default_factory=LatencyModel)
    critic_latency: LatencyModel = field(default_factory=lambda: CRITIC_LATENCY)
    mean_accuracy: float = 0.5
    concentration: float = 2.0
    end_without_answer: float = 0.01
    generic_share: float = 0.02
    regurgitation_share: float = 0.02
    drift_share: float = 0.03

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SimulatedConfig:
        fields = dict(data)
        for name in ("policy_latency", "critic_latency"):
            if isinstance(fields.get(name), dict):
                fields[name] = LatencyModel(**fields[name])
        return cls(**fields)


def read_golds(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    golds = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            golds[row["problem"].strip()] = str(row["answer"])
    return golds


def _empty_kind() -> dict[str, float]:
    return dict.fromkeys(
        ("requests", "samples", "prompt_tokens", "completion_tokens", "service_s", "sequence_s", "queued_s",
         "length_cut"), 0
    )  # fmt: skip


class _State:
    def __init__(self, config: SimulatedConfig) -> None:
        self.config = config
        style = real_policy_style()
        self.policy = SimulatedPolicy(
            style, read_golds(config.problems_file), config.mean_accuracy, config.concentration,
            config.end_without_answer,
        )  # fmt: skip
        self.critic = SimulatedCritic.from_style(
            style,
            generic_share=config.generic_share,
            regurgitation_share=config.regurgitation_share,
            drift_share=config.drift_share,
        )
        self.policy_batch = Batch(config.policy_latency)
        self.critic_batch = Batch(config.critic_latency)
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        self.kinds = {kind: _empty_kind() for kind in KINDS}
        self.max_in_flight = 0
        self.errors = 0

    def stats(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "kinds": self.kinds,
            "requests": sum(int(k["requests"]) for k in self.kinds.values()),
            "max_in_flight": self.max_in_flight,
            "errors": self.errors,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "config": self.config.to_json(),
        }


def _tokens(text: str, chars_per_token: float) -> int:
    return max(1, math.ceil(len(text) / chars_per_token)) if text else 0


def _cut(text: str, max_tokens: int, chars_per_token: float) -> tuple[str, bool]:
    if _tokens(text, chars_per_token) <= max_tokens:
        return text, False
    return text[: int(max_tokens * chars_per_token)], True


def build_app(state: _State) -> web.Application:
    async def answer(
        kind: str, prompt: str, texts: list[tuple[str, bool]], req: dict[str, Any]
    ) -> tuple[list[tuple[str, str, str | None]], dict[str, int]]:
        """Cut each sample to max_tokens, count it, wait as the latency model says; returns per sample
        (text, finish_reason, stop_reason) and the usage."""
        critic = kind in ("critique", "revision")
        cpt = state.config.critic_chars_per_token if critic else state.config.policy_chars_per_token
        max_tokens = int(req.get("max_tokens") or 16)
        stop = req.get("stop")
        stop_string = (stop if isinstance(stop, str) else stop[0]) if stop else None
        out, lengths, cut_count = [], [], 0
        for text, ended in texts:
            text, cut = _cut(text, max_tokens, cpt)
            cut_count += cut
            lengths.append(_tokens(text, cpt))
            if cut:
                out.append((text, "length", None))
            else:
                out.append((text, "stop", None if ended or not stop_string else stop_string))
        prompt_tokens = _tokens(prompt, cpt)
        model = state.config.critic_latency if critic else state.config.policy_latency
        service = model.service_s(prompt_tokens, lengths)
        figures = state.kinds[kind]
        batch = state.critic_batch if critic else state.policy_batch
        queued = await batch.serve(len(texts), service)
        figures["requests"] += 1
        figures["samples"] += len(texts)
        figures["prompt_tokens"] += prompt_tokens
        figures["completion_tokens"] += sum(lengths)
        figures["service_s"] += service
        figures["sequence_s"] += service * len(texts)
        figures["queued_s"] += queued
        figures["length_cut"] += cut_count
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": sum(lengths)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return out, usage

    def body(
        kind: str, chat: bool, req: dict[str, Any], samples: list[tuple[str, str, str | None]], usage: dict
    ) -> web.Response:
        if chat:
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": t},
                    "finish_reason": f,
                    "logprobs": None,
                }
                for i, (t, f, _) in enumerate(samples)
            ]
        else:
            choices = [
                {"index": i, "text": t, "finish_reason": f, "stop_reason": s, "logprobs": None}
                for i, (t, f, s) in enumerate(samples)
            ]
        data = {
            "id": f"sim-{kind}-{int(time.time() * 1e6)}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": req.get("model", ""),
            "choices": choices,
            "usage": usage,
        }
        return web.Response(body=json.dumps(data).encode(), content_type="application/json")

    def bad(message: str) -> web.Response:
        state.errors += 1
        error = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
        return web.json_response(error, status=400)

    async def completions(request: web.Request) -> web.Response:
        req = json.loads(await request.read())
        prompt = req.get("prompt")
        if not isinstance(prompt, str):
            return bad("this server takes one string prompt per request")
        problem, depth = problem_and_depth(prompt)
        whole = not req.get("stop")
        n = int(req.get("n") or 1)
        temperature = float(req.get("temperature") or 0.0)
        texts = state.policy.samples(problem, depth, n, temperature, req.get("seed"), whole=whole)
        kind = "rollout" if whole else "step"
        samples, usage = await answer(kind, prompt, texts, req)
        return body(kind, False, req, samples, usage)

    async def chat(request: web.Request) -> web.Response:
        req = json.loads(await request.read())
        messages = req.get("messages") or []
        content = messages[-1].get("content", "") if messages else ""
        n = int(req.get("n") or 1)
        seed = req.get("seed")
        if req.get("model") == state.config.critic_model:
            kind = "critique" if "Answer with JSON only" in content else "revision"
            try:
                texts = [(state.critic.answer(content, seed, i), True) for i in range(n)]
            except ValueError as exc:
                return bad(str(exc))
        else:
            kind = "eval"
            problem = content.rsplit("\n", 1)[0].strip()
            temperature = float(req.get("temperature") or 0.0)
            texts = [
                (
                    "\n\n".join(
                        state.policy.continuation(problem, 1, seeded("eval", seed, i, problem, temperature))
                    ),
                    True,
                )
                for i in range(n)
            ]
        samples, usage = await answer(kind, content, texts, req)
        return body(kind, True, req, samples, usage)

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "simulated", "object": "model"}]})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(state.stats())

    async def reset(request: web.Request) -> web.Response:
        state.reset()
        return web.json_response(state.stats())

    @web.middleware
    async def count_in_flight(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        # From the request's arrival to its answer: what the client keeps open at once.
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            return await handler(request)
        finally:
            state.in_flight -= 1

    app = web.Application(client_max_size=64 * 1024**2, middlewares=[count_in_flight])
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    return app


def _runner(state: _State) -> web.AppRunner:
    return web.AppRunner(build_app(state), access_log=None, handler_cancellation=True, shutdown_timeout=0.5)


class SimulatedServer(LoopbackServer):
    """The server in a background thread of this process (its CPU counts as this process's)."""

    thread_name = "simulated-server"
    backlog = 2048

    def __init__(self, config: SimulatedConfig | None = None, port: int = 0) -> None:
        super().__init__(port)
        self._state = _State(config or SimulatedConfig())

    async def make_runner(self) -> web.AppRunner:
        return _runner(self._state)

    def stats(self) -> dict[str, Any]:
        return self._state.stats()

    def reset(self) -> None:
        self._state.reset()


def _http_json(url: str, data: dict[str, Any] | None = None, timeout: float = 10.0) -> dict[str, Any]:
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, method="GET" if data is None else "POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


class SimulatedServerProcess:
    """The server in a child process; counters over HTTP."""

    def __init__(self, config: SimulatedConfig | None = None, startup_timeout_s: float = 60.0) -> None:
        self.config = config or SimulatedConfig()
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[str] | None = None
        self.base_url = ""

    @property
    def url(self) -> str:
        return self.base_url.removesuffix("/v1")

    def start(self) -> Self:
        if self.process is not None:
            return self
        root = str(Path(__file__).resolve().parents[2])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH")))),
        }
        command = [sys.executable, "-m", "sigma_assets.testing.simulated_server", "--config-json",
                   json.dumps(self.config.to_json())]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + self.startup_timeout_s
        assert self.process.stdout is not None
        line = ""
        while not line.startswith(READY_PREFIX):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.process.poll() is not None:
                self.stop()
                raise RuntimeError("the simulated server did not start")
            if select.select([self.process.stdout], [], [], remaining)[0]:
                line = self.process.stdout.readline()
        self.base_url = line[len(READY_PREFIX) :].strip()
        return self

    def stats(self) -> dict[str, Any]:
        return _http_json(f"{self.url}/stats")

    def reset(self) -> None:
        _http_json(f"{self.url}/reset", {})

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _serve(config: SimulatedConfig, port: int) -> None:
    await serve_until_signalled(_runner(_State(config)), port, SimulatedServer.backlog, READY_PREFIX)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A simulated policy server and critic API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--config-json", default="{}", help="SimulatedConfig fields as JSON")
    args = parser.parse_args(argv)
    config = SimulatedConfig.from_json(json.loads(args.config_json))
    run: Callable[..., Any] = asyncio.run
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        pass
    run(_serve(config, args.port))


if __name__ == "__main__":
    main()
