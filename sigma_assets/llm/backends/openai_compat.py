"""Any OpenAI-compatible server (OpenAI, `vllm serve`, `transformers serve`) through the official client.

Retries are the client layer's job, so the SDK's own are off. `n` is sent natively; when a server
answers with fewer choices than asked (some ignore `n`), the rest are requested one by one with
distinct seeds.

Transport: the SDK's aiohttp transport (`openai[aiohttp]`) by default; its default httpx transport is
CPU-bound at a few hundred requests per second on a small machine, aiohttp costs about a third of the
CPU per request. `transport="httpx"` keeps the SDK's default.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from typing import Any

import openai

from sigma_assets.llm.client import (
    ConnectionFailed,
    FatalRequestError,
    InvalidResponse,
    RateLimited,
    RequestTimeout,
    ServerError,
)
from sigma_assets.llm.generation import FinishReason, GenerationRequest, Sample

try:  # the SDK's HTTP library: httpx2 from openai 3 on, httpx before
    import httpx2 as sdk_http
except ImportError:  # pragma: no cover - older SDKs
    import httpx as sdk_http  # type: ignore[no-redef]

TRANSPORTS = ("aiohttp", "httpx")


class OpenAIBackend:
    name = "openai"
    max_batch = 1

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_connections: int = 512,
        extra_body: dict[str, Any] | None = None,
        generation_config_sampling: bool = False,
        transport: str = "aiohttp",
    ):
        if transport not in TRANSPORTS:
            raise ValueError(f"transport={transport!r}: expected one of {', '.join(TRANSPORTS)}")
        self.transport = transport
        self.model = model
        # `transformers serve` samples only as its `generation_config` says (its default is greedy, so
        # n children would be n copies): send the sampling settings there too. Part of the store key.
        self.generation_config_sampling = generation_config_sampling
        if generation_config_sampling:
            self.name = "openai+generation_config"
        self.endpoint = base_url or "https://api.openai.com/v1"
        self.extra_body = extra_body or {}
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._max_connections = max_connections
        # An httpx pool belongs to the event loop it was first used on, so the SDK client is made per
        # loop on first use (a caller may run the client under asyncio.run more than once).
        # Loading the CA bundle costs about half a second of CPU: once per backend rather than once per
        # event loop inside the first request's timeout, and not at all for a plain-http server.
        self._verify: Any = False if self.endpoint.startswith("http://") else sdk_http.create_ssl_context()
        self._client: openai.AsyncOpenAI | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(model={self.model!r}, endpoint={self.endpoint!r})"

    def _sdk(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            limits = sdk_http.Limits(
                max_connections=self._max_connections, max_keepalive_connections=self._max_connections
            )
            http_client_class = (
                openai.DefaultAioHttpClient if self.transport == "aiohttp" else openai.DefaultAsyncHttpxClient
            )
            # A local server needs no key, but the SDK insists on one; the key never enters the store key.
            self._client = openai.AsyncOpenAI(
                base_url=self.endpoint,
                api_key=self._api_key or "unused",
                max_retries=0,
                timeout=self._timeout_s,
                http_client=http_client_class(limits=limits, timeout=self._timeout_s, verify=self._verify),
            )
            self._client_loop = loop
        return self._client

    def request_body(self, request: GenerationRequest, n: int, seed: int | None) -> dict[str, Any]:
        """The JSON body of a (chat) completion request: what is sent, and what a Batch API line carries."""
        params = request.params
        body: dict[str, Any] = {"model": self.model}
        if request.messages is not None:
            body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
            if params.json_output:
                body["response_format"] = {"type": "json_object"}
        else:
            body["prompt"] = request.prompt or ""
        body |= {
            "n": n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if seed is not None:
            body["seed"] = seed
        if self.generation_config_sampling and params.temperature > 0:
            sampling = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
            body["generation_config"] = json.dumps(sampling | {"max_new_tokens": params.max_tokens})
        return body | self.extra_body

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Sample]]:
        return [await self._one(request) for request in requests]

    async def _one(self, request: GenerationRequest) -> list[Sample]:
        samples = await self._call(request, request.params.n, request.params.seed)
        extra = 0
        while len(samples) < request.params.n:  # the server ignored `n`: emulate it with seeded calls
            extra += 1
            seed = None if request.params.seed is None else request.params.seed + extra
            samples += await self._call(request, 1, seed)
        return samples[: request.params.n]

    async def _call(self, request: GenerationRequest, n: int, seed: int | None) -> list[Sample]:
        path = "/chat/completions" if request.messages is not None else "/completions"
        try:
            # The SDK's own request path (auth, timeouts, errors), with a plain JSON body and the raw
            # answer: its typed transform of the body and model parsing of the answer cost more CPU per
            # request than everything else in the client layer together.
            raw = await self._sdk().post(path, body=self.request_body(request, n, seed), cast_to=bytes)
            samples = samples_from_completion(json.loads(raw))
        except openai.RateLimitError as exc:
            raise RateLimited(_describe(exc), retry_after_s=_retry_after(exc.response)) from exc
        except openai.APITimeoutError as exc:
            lost = _lost_connection(exc)
            if lost is not None:
                raise ConnectionFailed(f"connection lost before an answer ({lost})") from exc
            raise RequestTimeout(str(exc)) from exc
        except openai.APIConnectionError as exc:
            raise ConnectionFailed(str(exc)) from exc
        except openai.InternalServerError as exc:
            raise ServerError(_describe(exc), retry_after_s=_retry_after(exc.response)) from exc
        except openai.BadRequestError as exc:
            if _CONTEXT_OVERFLOW_RE.search(exc.message):
                # The prompt alone is too long for the model: an answer about this request, not a fault.
                return [Sample("", finish_reason="context_overflow")] * n
            raise FatalRequestError(_describe(exc)) from exc
        except openai.APIStatusError as exc:
            if exc.status_code in (408, 409):
                raise ServerError(_describe(exc)) from exc
            raise FatalRequestError(_describe(exc)) from exc
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # JSONDecodeError is a ValueError
            raise InvalidResponse(f"unreadable response: {type(exc).__name__}: {exc}") from exc
        if not samples:
            raise InvalidResponse("response has no choices")
        return samples

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._client_loop is asyncio.get_running_loop():
            await client.close()  # a client of a finished loop has nothing left to close there


# vLLM: "This model's maximum context length is 2048 tokens"; OpenAI: "maximum context length";
# others: "context length exceeded", "longer than the maximum model length".
_CONTEXT_OVERFLOW_RE = re.compile(r"context[ _]length|maximum model length|context window", re.IGNORECASE)


def _finish_reason(choice: dict[str, Any]) -> FinishReason:
    if choice.get("finish_reason") == "length":
        return "length"
    # vLLM adds `stop_reason`: the stop string that matched, or null when the model ended the text.
    if "stop_reason" in choice and choice["stop_reason"] is None:
        return "end"
    return "stop"


def _describe(exc: openai.APIStatusError) -> str:
    return f"HTTP {exc.status_code}: {exc.message}"


def _lost_connection(exc: BaseException) -> str | None:
    """aiohttp's transport reports a refused connection, and one the server closed without an answer, as a
    timeout ("Server disconnected" under `ConnectTimeout`): the lost connection among the causes, if any."""
    cause = exc.__cause__ or exc.__context__
    seen = 0
    while cause is not None and seen < 8:
        if type(cause).__name__ in _CONNECTION_ERRORS or isinstance(cause, ConnectionError):
            return f"{type(cause).__name__}: {cause}"
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return None


_CONNECTION_ERRORS = frozenset(
    {
        "ClientConnectorError",
        "ConnectError",
        "ServerDisconnectedError",
        "ClientOSError",
        "ClientConnectionError",
        "ClientConnectionResetError",
        "RemoteProtocolError",
    }
)


def _retry_after(response: Any) -> float | None:
    if response is None:
        return None
    for header, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = response.headers.get(header)
        if value:
            try:
                return float(value) * scale
            except ValueError:
                continue
    return None


def samples_from_completion(data: dict[str, Any]) -> list[Sample]:
    """The samples of a (chat) completion response body, in choice order."""
    choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
    texts = [
        ((c["message"].get("content") or "") if "message" in c else c["text"], _finish_reason(c))
        for c in choices
    ]
    usage = data.get("usage") or {}
    prompt_tokens, completion_tokens = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    # Usage comes per call: split it over the samples, remainder on the first, so sums stay exact.
    per_sample, remainder = divmod(completion_tokens, max(1, len(texts)))
    return [
        Sample(
            text=text,
            finish_reason=reason,
            # A prompt is billed once per call however many samples it yields.
            prompt_tokens=prompt_tokens if index == 0 else 0,
            completion_tokens=per_sample + (remainder if index == 0 else 0),
        )
        for index, (text, reason) in enumerate(texts)
    ]
