"""A fault-injecting OpenAI-compatible HTTP server for tests and benchmarks.

Serves `POST /v1/chat/completions`, `POST /v1/completions` and `GET /v1/models` on 127.0.0.1 only,
with deterministic response text (or text from a scripted `responder`), configurable latency, and
injected faults: 429 with Retry-After, 500, a stalled response (client timeout), a truncated body,
content that is not the requested JSON, finish_reason "length", a connection closed without an answer,
and an answer with an empty `choices` list. Faults are drawn at random with a
seeded generator (`fault_rate`, `fault_kinds`) or forced by the ordinal of the request (`fail_requests`).

The Batch API too: `POST /v1/files` (purpose "batch"), `GET /v1/files/{id}/content`, `POST /v1/batches`,
`GET /v1/batches` and `GET /v1/batches/{id}`. A batch answers every line with the same responder; it ends
`batch_complete_after_s` after its creation with the `batch_outcome` configured when it was created:
"completed", "expired" (only the first half of its lines answered, the rest `batch_expired`) or "partial"
(completed, every third line failed with a server error).

Control endpoints: `GET /stats` (counters), `POST /reset` (zero counters, restart ordinals and the
random sequence) and `POST /config` (change any `FaultConfig` field at run time).

Three ways to run it:
- `FaultServer` runs it in a background thread of this process (tests; supports `responder`).
- `FaultServerProcess` / `start_subprocess` run the CLI in a child process, so a benchmark client does
  not share the GIL with the server.
- `python -m sigma_assets.testing.fault_server --port 8399 --latency 0.5 --fault-rate 0.2 ...`: foreground.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from aiohttp import web

from sigma_assets.testing.loopback import LoopbackServer, serve_until_signalled

FAULT_KINDS: tuple[str, ...] = (
    "429",
    "500",
    "timeout",
    "truncated",
    "invalid_json",
    "length",
    "closed",  # the connection is closed without an answer
    "empty_choices",  # a well-formed answer whose `choices` list is empty
)
INVALID_JSON_CONTENT = "this is not json {"
READY_PREFIX = "FAULT_SERVER_READY "
ENDPOINTS: tuple[str, ...] = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/v1/files",
    "/v1/batches",
)
BATCH_OUTCOMES: tuple[str, ...] = ("completed", "expired", "partial")

Responder = Callable[[dict[str, Any], int], str]


@dataclass
class FaultConfig:
    """Run-time behaviour of the server; every field can be changed through `POST /config`."""

    model: str = "fault-model"
    latency_s: float = 0.0  # asyncio.sleep before every generation request, faulty ones included
    # Up to this much more, drawn per request from an unseeded generator: answers arrive in no fixed order.
    latency_jitter_s: float = 0.0
    fault_rate: float = 0.0  # probability (0..1) that a request gets a random fault from fault_kinds
    fault_kinds: tuple[str, ...] = ("429", "500")
    retry_after_s: float = 0.05  # Retry-After value sent with injected 429s
    timeout_sleep_s: float = 30.0  # how long a "timeout" fault stalls before answering
    fail_requests: dict[int, str] = field(default_factory=dict)  # 1-based request ordinal -> fault kind
    seed: int | None = 0  # seeds the fault generator, so random fault sequences are reproducible
    api_key: str | None = None  # when set, requests need `Authorization: Bearer <api_key>`
    ignore_n: bool = False  # answer one choice whatever `n` asks, as some OpenAI-compatible servers do
    # Refuse prompts longer than this many tokens with HTTP 400, in vLLM's words; None: no limit.
    max_context_tokens: int | None = None
    batch_complete_after_s: float = 0.0  # how long a batch stays in progress
    batch_outcome: str = "completed"  # how batches created from now on end, see BATCH_OUTCOMES

    def __post_init__(self) -> None:
        self.fault_kinds = tuple(self.fault_kinds)
        # JSON object keys are strings; accept them so /config and --config-json round-trip
        self.fail_requests = {int(k): str(v) for k, v in self.fail_requests.items()}
        bad = [k for k in (*self.fault_kinds, *self.fail_requests.values()) if k not in FAULT_KINDS]
        if bad:
            raise ValueError(f"unknown fault kind(s) {bad}; known: {FAULT_KINDS}")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be within 0..1, got {self.fault_rate}")
        if self.fault_rate > 0 and not self.fault_kinds:
            raise ValueError("fault_rate > 0 needs at least one fault kind")
        if self.batch_outcome not in BATCH_OUTCOMES:
            raise ValueError(f"unknown batch_outcome {self.batch_outcome!r}; known: {BATCH_OUTCOMES}")

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["fault_kinds"] = list(self.fault_kinds)
        data["fail_requests"] = {str(k): v for k, v in self.fail_requests.items()}
        return data

    def updated(self, fields: Mapping[str, Any]) -> FaultConfig:
        unknown = set(fields) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown config field(s): {sorted(unknown)}")
        return dataclasses.replace(self, **fields)


def default_text(request_json: dict[str, Any], sample_index: int) -> str:
    """Deterministic echo-like text: the same request always gets the same answers."""
    canonical = json.dumps(request_json, sort_keys=True, separators=(",", ":"))
    return f"reply {hashlib.sha256(canonical.encode()).hexdigest()[:12]} sample {sample_index}"


def _tokens(text: str) -> int:
    return len(text) // 4 + 1


def _error_body(message: str, type_: str, code: str | None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()


def _chat_prompt_text(messages: Any) -> str:
    parts: list[str] = []
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
    return "\n".join(parts)


def _completion_prompts(prompt: Any) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    return [json.dumps(prompt)]  # token-id prompts: only their length matters here


class _State:
    """Config, counters and the fault generator. Touched only on the server's event loop thread."""

    def __init__(self, config: FaultConfig, responder: Responder | None) -> None:
        self.responder: Responder = responder or default_text
        self.config = config
        self.apply(config)
        self.reset()

    def apply(self, config: FaultConfig) -> None:
        if config.seed != self.config.seed:
            self.rng = random.Random(config.seed)
        self.config = config
        # precomputed once per config, not per request
        self.auth_header = f"Bearer {config.api_key}" if config.api_key else None
        self.models_body = json.dumps(
            {
                "object": "list",
                "data": [{"id": config.model, "object": "model", "created": 0, "owned_by": "fault-server"}],
            }
        ).encode()
        retry = config.retry_after_s
        self.headers_429 = {"Retry-After": f"{retry:g}", "retry-after-ms": str(round(retry * 1000))}

    def reset(self) -> None:
        self.ordinal = 0  # generation requests received so far (401s and 400s included)
        self.requests = dict.fromkeys(ENDPOINTS, 0)
        self.faults = dict.fromkeys(FAULT_KINDS, 0)
        self.unauthorized = 0
        self.bad_requests = 0
        self.responder_errors = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.batch_lines = 0  # request lines submitted in batches
        self.rng = random.Random(self.config.seed)  # so a reset server repeats its fault sequence

    def stats(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "total": sum(self.requests.values()),
            "faults": dict(self.faults),
            "faults_total": sum(self.faults.values()),
            "unauthorized": self.unauthorized,
            "bad_requests": self.bad_requests,
            "responder_errors": self.responder_errors,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "batches_created": len(self.batches),
            "batch_lines": self.batch_lines,
            "config": self.config.to_json(),
        }

    def pick_fault(self, ordinal: int) -> str | None:
        forced = self.config.fail_requests.get(ordinal)
        if forced is not None:
            return forced
        # draw only when faults are on, so a fault-free server costs no random numbers
        if self.config.fault_rate > 0 and self.rng.random() < self.config.fault_rate:
            return self.rng.choice(self.config.fault_kinds)
        return None


_BODY_500 = _error_body(
    "The server had an error while processing your request (injected fault)", "server_error", None
)
_BODY_429 = _error_body("Rate limit reached (injected fault)", "requests", "rate_limit_exceeded")
_BODY_401 = _error_body("Incorrect API key provided", "invalid_request_error", "invalid_api_key")
_JSON = "application/json"


def _file_object(file_id: str, size: int, filename: str) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": int(time.time()),
        "filename": filename,
        "purpose": "batch",
        "status": "processed",
    }


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def _json_response(body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=body, status=status, content_type=_JSON, headers=headers)


def build_app(state: _State) -> web.Application:
    async def generate(request: web.Request, chat: bool) -> web.Response:
        path = "/v1/chat/completions" if chat else "/v1/completions"
        state.requests[path] += 1
        state.ordinal += 1
        ordinal = state.ordinal
        if state.auth_header is not None and request.headers.get("Authorization") != state.auth_header:
            state.unauthorized += 1
            return _json_response(_BODY_401, 401)
        try:
            req = json.loads(await request.read())
            if not isinstance(req, dict):
                raise TypeError("request body must be a JSON object")
            n = 1 if state.config.ignore_n else int(req.get("n") or 1)
            if chat:
                prompts = [_chat_prompt_text(req.get("messages"))]
            else:
                prompts = _completion_prompts(req.get("prompt"))
        except (ValueError, TypeError) as exc:
            state.bad_requests += 1
            return _json_response(_error_body(f"bad request: {exc}", "invalid_request_error", None), 400)
        limit = state.config.max_context_tokens
        longest = max((_tokens(p) for p in prompts), default=0)
        if limit is not None and longest + int(req.get("max_tokens") or 0) > limit:
            state.bad_requests += 1
            requested = longest + int(req.get("max_tokens") or 0)
            message = (
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{requested} tokens. Please reduce the length of the messages."
            )
            return _json_response(_error_body(message, "BadRequestError", None), 400)

        fault = state.pick_fault(ordinal)
        if fault is not None:
            state.faults[fault] += 1
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            latency = state.config.latency_s + random.uniform(0.0, state.config.latency_jitter_s)
            if latency > 0:
                await asyncio.sleep(latency)
            if fault == "429":
                return _json_response(_BODY_429, 429, state.headers_429)
            if fault == "500":
                return _json_response(_BODY_500, 500)
            if fault == "timeout":
                await asyncio.sleep(state.config.timeout_sleep_s)  # the client should give up first
            if fault == "closed":
                assert request.transport is not None
                request.transport.close()  # no status line, no body: the peer hung up
                raise web.HTTPInternalServerError()  # never sent: the connection is gone

            choices: list[dict[str, Any]] = []
            completion_tokens = 0
            for p_index in range(len(prompts)):
                for i in range(n):
                    index = p_index * n + i
                    try:
                        text = state.responder(req, index)
                    except Exception as exc:  # a broken test script should be a 500, not a hang
                        state.responder_errors += 1
                        msg = f"responder failed: {exc!r}"
                        return _json_response(_error_body(msg, "server_error", None), 500)
                    finish = "stop"
                    if fault == "invalid_json":
                        text = INVALID_JSON_CONTENT
                    elif fault == "length":
                        text = text[: max(1, len(text) // 2)]
                        finish = "length"
                    completion_tokens += _tokens(text)
                    if chat:
                        choices.append(
                            {
                                "index": index,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": finish,
                                "logprobs": None,
                            }
                        )
                    else:
                        choices.append(
                            {"index": index, "text": text, "finish_reason": finish, "logprobs": None}
                        )
            prompt_tokens = sum(_tokens(p) for p in prompts)
            body = json.dumps(
                {
                    "id": f"{'chatcmpl' if chat else 'cmpl'}-fault-{ordinal}",
                    "object": "chat.completion" if chat else "text_completion",
                    "created": int(time.time()),
                    "model": req.get("model") or state.config.model,
                    "choices": choices,
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                }
            ).encode()
            if fault == "truncated":
                body = body[: len(body) // 2]  # complete HTTP response, invalid JSON
            if fault == "empty_choices":
                body = json.dumps({**json.loads(body), "choices": []}).encode()
            return _json_response(body)
        finally:
            state.in_flight -= 1

    async def chat_completions(request: web.Request) -> web.Response:
        return await generate(request, chat=True)

    async def completions(request: web.Request) -> web.Response:
        return await generate(request, chat=False)

    async def models(request: web.Request) -> web.Response:
        state.requests["/v1/models"] += 1
        if state.auth_header is not None and request.headers.get("Authorization") != state.auth_header:
            state.unauthorized += 1
            return _json_response(_BODY_401, 401)
        return _json_response(state.models_body)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(state.stats())

    async def upload_file(request: web.Request) -> web.Response:
        state.requests["/v1/files"] += 1
        form = await request.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField) or form.get("purpose") != "batch":
            return _json_response(
                _error_body("need a file with purpose batch", "invalid_request_error", None), 400
            )
        data = upload.file.read()
        file_id = f"file-{len(state.files) + 1:06d}"
        state.files[file_id] = data
        return web.json_response(_file_object(file_id, len(data), upload.filename or "input.jsonl"))

    async def file_content(request: web.Request) -> web.Response:
        data = state.files.get(request.match_info["file_id"])
        if data is None:
            return _json_response(_error_body("no such file", "invalid_request_error", None), 404)
        return web.Response(body=data, content_type="application/octet-stream")

    async def create_batch(request: web.Request) -> web.Response:
        state.requests["/v1/batches"] += 1
        body = await request.json()
        data = state.files.get(body.get("input_file_id", ""))
        if data is None:
            return _json_response(_error_body("no such input file", "invalid_request_error", None), 400)
        lines = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        state.batch_lines += len(lines)
        batch_id = f"batch_{len(state.batches) + 1:06d}"
        state.batches[batch_id] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": body.get("endpoint", "/v1/chat/completions"),
            "input_file_id": body["input_file_id"],
            "completion_window": body.get("completion_window", "24h"),
            "status": "in_progress",
            "created_at": int(time.time()),
            "metadata": body.get("metadata"),
            "output_file_id": None,
            "error_file_id": None,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "_lines": lines,
            "_outcome": state.config.batch_outcome,
            "_done_at": time.monotonic() + state.config.batch_complete_after_s,
        }
        return web.json_response(_public(state.batches[batch_id]))

    def finish(batch: dict[str, Any]) -> None:
        """Answer a batch's lines once its time has come, as its outcome says."""
        if batch["status"] != "in_progress" or time.monotonic() < batch["_done_at"]:
            return
        lines, outcome = batch["_lines"], batch["_outcome"]
        answered, errors = [], []
        for i, line in enumerate(lines):
            expired = outcome == "expired" and i >= len(lines) // 2
            failed = outcome == "partial" and i % 3 == 2
            if expired or failed:
                code = "batch_expired" if expired else "server_error"
                errors.append(
                    {
                        "id": f"req_{i}",
                        "custom_id": line["custom_id"],
                        "response": None,
                        "error": {"code": code, "message": f"{code} (injected)"},
                    }
                )
                continue
            req = line["body"]
            n = int(req.get("n") or 1)
            prompt = _chat_prompt_text(req.get("messages"))
            texts = [state.responder(req, k) for k in range(n)]
            completion = {
                "id": f"chatcmpl-batch-{i}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": req.get("model") or state.config.model,
                "choices": [
                    {
                        "index": k,
                        "message": {"role": "assistant", "content": t},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                    for k, t in enumerate(texts)
                ],
                "usage": {
                    "prompt_tokens": _tokens(prompt),
                    "completion_tokens": sum(_tokens(t) for t in texts),
                    "total_tokens": _tokens(prompt) + sum(_tokens(t) for t in texts),
                },
            }
            answered.append(
                {
                    "id": f"req_{i}",
                    "custom_id": line["custom_id"],
                    "response": {"status_code": 200, "request_id": f"r{i}", "body": completion},
                    "error": None,
                }
            )
        for rows, field_name in ((answered, "output_file_id"), (errors, "error_file_id")):
            if rows:
                file_id = f"file-{len(state.files) + 1:06d}"
                state.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                batch[field_name] = file_id
        batch["status"] = "expired" if outcome == "expired" else "completed"
        batch["request_counts"] = {"total": len(lines), "completed": len(answered), "failed": len(errors)}

    async def get_batch(request: web.Request) -> web.Response:
        batch = state.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _json_response(_error_body("no such batch", "invalid_request_error", None), 404)
        finish(batch)
        return web.json_response(_public(batch))

    async def list_batches(request: web.Request) -> web.Response:
        data = [_public(b) for b in reversed(state.batches.values())]
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    async def reset(request: web.Request) -> web.Response:
        state.reset()
        return web.json_response(state.stats())

    async def config(request: web.Request) -> web.Response:
        try:
            fields = await request.json()
            if not isinstance(fields, dict):
                raise TypeError("config body must be a JSON object")
            state.apply(state.config.updated(fields))
        except (ValueError, TypeError) as exc:
            return _json_response(_error_body(f"bad config: {exc}", "invalid_request_error", None), 400)
        return web.json_response(state.config.to_json())

    # default client_max_size (1 MiB) is too small for long prompts with n>1 batches of messages
    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/files", upload_file)
    app.router.add_get("/v1/files/{file_id}/content", file_content)
    app.router.add_post("/v1/batches", create_batch)
    app.router.add_get("/v1/batches", list_batches)
    app.router.add_get("/v1/batches/{batch_id}", get_batch)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    app.router.add_post("/config", config)
    return app


def _make_runner(state: _State) -> web.AppRunner:
    # no access log (speed); handler_cancellation frees stalled "timeout" handlers when clients give up;
    # short shutdown_timeout so stop() does not wait for stalled handlers
    return web.AppRunner(build_app(state), access_log=None, handler_cancellation=True, shutdown_timeout=0.5)


class FaultServer(LoopbackServer):
    """The server in a background thread with its own event loop, on 127.0.0.1 and a free port."""

    thread_name = "fault-server"
    backlog = 2048  # 256+ concurrent connects must not overflow

    def __init__(
        self,
        config: FaultConfig | None = None,
        *,
        responder: Responder | None = None,
        port: int = 0,
        **fields: Any,
    ) -> None:
        super().__init__(port)
        config = config or FaultConfig()
        self._state = _State(config.updated(fields) if fields else config, responder)

    async def make_runner(self) -> web.AppRunner:
        return _make_runner(self._state)

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run fn on the server loop, where the state lives, and return its result."""
        if not self.running or self._loop is None:
            return fn()  # not running: nothing else touches the state

        async def wrapper() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(10)

    def stats(self) -> dict[str, Any]:
        return self._call(self._state.stats)

    def reset(self) -> None:
        self._call(self._state.reset)

    def configure(self, **fields: Any) -> None:
        self._call(lambda: self._state.apply(self._state.config.updated(fields)))

    @property
    def config(self) -> FaultConfig:
        return self._state.config


# --- child process -------------------------------------------------------------------------------


def _http_json(
    url: str, data: dict[str, Any] | None = None, api_key: str | None = None, timeout: float = 5.0
) -> dict[str, Any]:
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, method="GET" if data is None else "POST")
    req.add_header("Content-Type", _JSON)
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def start_subprocess(
    config: FaultConfig | None = None, port: int | None = None, startup_timeout_s: float = 20.0
) -> tuple[subprocess.Popen[str], str]:
    """Start the CLI in a child process; return it and its base_url once `/v1/models` answers."""
    config = config or FaultConfig()
    env = dict(os.environ)
    # the child must import this package even when the parent's cwd is elsewhere
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    cmd = [
        sys.executable,
        "-m",
        "sigma_assets.testing.fault_server",
        "--port",
        str(port or 0),
        "--config-json",
        json.dumps(config.to_json()),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + startup_timeout_s
    try:
        assert proc.stdout is not None
        # the child prints its real port once bound, which is race-free for port 0
        line = ""
        while not line.startswith(READY_PREFIX):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or proc.poll() is not None:
                raise RuntimeError(f"fault server subprocess did not start (exit code {proc.poll()})")
            if select.select([proc.stdout], [], [], remaining)[0]:
                line = proc.stdout.readline()
        base_url = line[len(READY_PREFIX) :].strip()
        while True:
            try:
                _http_json(f"{base_url}/models", api_key=config.api_key, timeout=1.0)
                return proc, base_url
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


class FaultServerProcess:
    """`FaultServer`, but in a child process (no GIL sharing with the client); counters over HTTP."""

    def __init__(self, config: FaultConfig | None = None, *, port: int | None = None, **fields: Any) -> None:
        config = config or FaultConfig()
        self.config = config.updated(fields) if fields else config
        self._port = port
        self.process: subprocess.Popen[str] | None = None
        self.base_url = ""

    @property
    def url(self) -> str:
        return self.base_url.removesuffix("/v1")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1]) if self.base_url else 0

    def start(self) -> Self:
        if self.process is None:
            self.process, self.base_url = start_subprocess(self.config, self._port)
        return self

    def stats(self) -> dict[str, Any]:
        return _http_json(f"{self.url}/stats")

    def reset(self) -> None:
        _http_json(f"{self.url}/reset", {})

    def configure(self, **fields: Any) -> None:
        self.config = self.config.updated(fields)  # validate here, where the caller can see the error
        _http_json(f"{self.url}/config", self.config.to_json())

    def stop(self, timeout_s: float = 5.0) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- CLI -----------------------------------------------------------------------------------------


def _parse_fail_requests(text: str) -> dict[int, str]:
    """Parse "3:429,5:timeout" into {3: "429", 5: "timeout"}."""
    out: dict[int, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        ordinal, _, kind = item.partition(":")
        out[int(ordinal)] = kind.strip()
    return out


def _config_from_args(args: argparse.Namespace) -> FaultConfig:
    fields: dict[str, Any] = json.loads(args.config_json) if args.config_json else {}
    overrides = {
        "model": args.model,
        "latency_s": args.latency,
        "fault_rate": args.fault_rate,
        "fault_kinds": tuple(k.strip() for k in args.fault_kinds.split(",") if k.strip())
        if args.fault_kinds is not None
        else None,
        "retry_after_s": args.retry_after,
        "timeout_sleep_s": args.timeout_sleep,
        "fail_requests": _parse_fail_requests(args.fail_requests) if args.fail_requests is not None else None,
        "seed": args.seed,
        "api_key": args.api_key,
    }
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return FaultConfig().updated(fields)


async def _serve_forever(config: FaultConfig, port: int) -> None:
    await serve_until_signalled(_make_runner(_State(config, None)), port, FaultServer.backlog, READY_PREFIX)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fault-injecting OpenAI-compatible server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8399, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--config-json", help="FaultConfig fields as JSON; the flags below override it")
    parser.add_argument("--model")
    parser.add_argument("--latency", type=float, help="seconds of latency per request")
    parser.add_argument("--fault-rate", type=float)
    parser.add_argument("--fault-kinds", help=f"comma-separated, from {','.join(FAULT_KINDS)}")
    parser.add_argument("--retry-after", type=float, help="Retry-After seconds for 429s")
    parser.add_argument("--timeout-sleep", type=float, help="stall seconds for timeout faults")
    parser.add_argument("--fail-requests", help='forced faults by request ordinal, e.g. "3:429,5:timeout"')
    parser.add_argument("--seed", type=int)
    parser.add_argument("--api-key")
    parser.add_argument("--no-uvloop", action="store_true", help="use the standard asyncio event loop")
    args = parser.parse_args(argv)
    try:
        config = _config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    runner: Callable[..., Any] = asyncio.run
    if not args.no_uvloop:
        try:
            import uvloop  # a faster loop matters at hundreds of requests/s on two cores

            runner = uvloop.run
        except ImportError:
            pass
    runner(_serve_forever(config, args.port))


if __name__ == "__main__":
    main()
