"""An aiohttp application served on 127.0.0.1 from a background thread with its own event loop, so
synchronous tests and benchmarks can start it, talk to it over real HTTP and stop it."""

from __future__ import annotations

import asyncio
import signal
import threading
from typing import Self

from aiohttp import web

HOST = "127.0.0.1"


class LoopbackServer:
    """Subclasses build the runner (`make_runner`) and may release what it holds (`cleanup`)."""

    thread_name = "loopback-server"
    backlog = 128

    def __init__(self, port: int = 0) -> None:
        self._requested_port = port
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self._error: BaseException | None = None

    async def make_runner(self) -> web.AppRunner:
        raise NotImplementedError

    async def cleanup(self) -> None:
        """Called on the server loop after the site has stopped."""

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> Self:
        if self._thread is not None:
            return self
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=self.thread_name, daemon=True)
        self._thread.start()
        ready.wait(10)
        if self._error is not None or not self.port:
            raise RuntimeError(f"{self.thread_name} failed to start") from self._error
        return self

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def serve() -> None:
            self._stopped = asyncio.Event()
            runner, self.port = await start_site(await self.make_runner(), self._requested_port, self.backlog)
            ready.set()
            try:
                await self._stopped.wait()
            finally:
                await runner.cleanup()
                await self.cleanup()

        try:
            loop.run_until_complete(serve())
        except Exception as exc:  # surfaced by start(); a thread cannot raise it
            self._error = exc
        finally:
            ready.set()
            loop.close()

    @property
    def running(self) -> bool:
        return self._loop is not None and self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        thread, loop, stopped = self._thread, self._loop, self._stopped
        if thread is None:
            return
        if loop is not None and stopped is not None and thread.is_alive():
            loop.call_soon_threadsafe(stopped.set)
        thread.join(10)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def start_site(runner: web.AppRunner, port: int, backlog: int) -> tuple[web.AppRunner, int]:
    """Set `runner` up on 127.0.0.1:`port` (0: a free one); returns it and the port it got."""
    await runner.setup()
    site = web.TCPSite(runner, HOST, port, backlog=backlog)
    await site.start()
    server = site._server  # the bound socket is the only way to learn the port when asked for 0
    return runner, server.sockets[0].getsockname()[1] if server is not None else port


async def serve_until_signalled(runner: web.AppRunner, port: int, backlog: int, ready_prefix: str) -> None:
    """Serve `runner` in the foreground, print `ready_prefix` and the base URL once listening (what a
    parent process waits for), and stop cleanly on SIGTERM or SIGINT."""
    runner, port = await start_site(runner, port, backlog)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"{ready_prefix}http://{HOST}:{port}/v1", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
