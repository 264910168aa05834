"""A recording reverse proxy on loopback: what a client sends to an OpenAI-compatible server, as the
server receives it.

Every `POST` under `/v1/` is forwarded unchanged to the upstream server and recorded with its JSON body
and the server's JSON answer, so a test can check the requests that reached the server (their `n`,
their prompts) and the choices that came back, without touching the client or the server.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from sigma_assets.testing.loopback import LoopbackServer


@dataclass(frozen=True)
class Exchange:
    path: str
    request: dict[str, Any]
    status: int
    response: dict[str, Any] | None  # None when the answer was not JSON


class RecordingProxy(LoopbackServer):
    """Forwards `/v1/*` to `upstream` (a base URL ending in `/v1`) and records each POST exchange."""

    thread_name = "recording-proxy"

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream.rstrip("/").removesuffix("/v1")
        self._exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._session: aiohttp.ClientSession | None = None

    def exchanges(self) -> list[Exchange]:
        with self._lock:
            return list(self._exchanges)

    async def make_runner(self) -> web.AppRunner:
        # Generation on a CPU server can take minutes per request: no proxy-side timeout.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_route("*", "/v1/{tail:.*}", self._forward)
        return web.AppRunner(app, access_log=None)

    async def cleanup(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        assert self._session is not None
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            data=body,
            headers={"Content-Type": request.headers.get("Content-Type", "application/json")},
        ) as upstream:
            payload = await upstream.read()
            status, content_type = upstream.status, upstream.headers.get("Content-Type", "")
        if request.method == "POST":
            try:
                answer = json.loads(payload)
            except ValueError:
                answer = None
            with self._lock:
                self._exchanges.append(Exchange(request.path, json.loads(body), status, answer))
        return web.Response(body=payload, status=status, content_type=content_type.split(";")[0] or None)
