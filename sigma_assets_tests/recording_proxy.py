"""A recording reverse proxy on loopback: what a client sends to an OpenAI-compatible server, as the
server receives it.

Every `POST` under `/v1/` is forwarded unchanged to the upstream server and recorded with its JSON body
and the server's JSON answer, so a test can check the requests that reached the server (their `n`,
their prompts) and the choices that came back, without touching the client or the server.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from typing import Any, Self

import aiohttp
from aiohttp import web

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Exchange:
    path: str
    request: dict[str, Any]
    status: int
    response: dict[str, Any] | None  # None when the answer was not JSON


class RecordingProxy:
    """Forwards `/v1/*` to `upstream` (a base URL ending in `/v1`) and records each POST exchange."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/").removesuffix("/v1")
        self.port = 0
        self._exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def exchanges(self) -> list[Exchange]:
        with self._lock:
            return list(self._exchanges)

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

    def start(self) -> Self:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="recording-proxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        if self._error is not None or not self.port:
            raise RuntimeError("recording proxy failed to start") from self._error
        return self

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def serve() -> None:
            self._stopped = asyncio.Event()
            # Generation on a CPU server can take minutes per request: no proxy-side timeout.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
            app = web.Application(client_max_size=64 * 1024**2)
            app.router.add_route("*", "/v1/{tail:.*}", self._forward)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, HOST, 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            try:
                await self._stopped.wait()
            finally:
                await runner.cleanup()
                await self._session.close()

        try:
            loop.run_until_complete(serve())
        except Exception as exc:  # surfaced by start()
            self._error = exc
        finally:
            ready.set()
            loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
