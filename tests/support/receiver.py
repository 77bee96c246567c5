"""A real HTTP receiver on 127.0.0.1 for delivery tests, scriptable per path.

Every request is recorded (path, headers, body, arrival time). A path's script is a list of
``Reply`` consumed in order (then its default): a status, headers, a delay before answering, a body
dripped slowly, or never answering at all.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay_s: float = 0.0
    drip_every_s: float | None = None  # send the body one byte at a time
    hang: bool = False  # never answer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    monotonic: float
    wall: float


class Receiver:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.requests: list[Received] = []
        self.scripts: dict[str, list[Reply]] = defaultdict(list)
        self.defaults: dict[str, Reply] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.arrived = asyncio.Event()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def on(self, path: str, *replies: Reply, default: Reply | None = None) -> None:
        self.scripts[path].extend(replies)
        if default is not None:
            self.defaults[path] = default

    def to(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def start(self) -> Receiver:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Received(request.path, dict(request.headers), body, time.monotonic(), time.time())
        )
        self.arrived.set()
        script = self.scripts.get(request.path)
        reply = script.pop(0) if script else self.defaults.get(request.path, Reply())
        if reply.hang:
            await asyncio.sleep(3600)
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.drip_every_s is not None:
            resp = web.StreamResponse(status=reply.status, headers=reply.headers)
            resp.content_length = len(reply.body)
            await resp.prepare(request)
            for i in range(len(reply.body)):
                await resp.write(reply.body[i : i + 1])
                await asyncio.sleep(reply.drip_every_s)
            return resp
        return web.Response(status=reply.status, headers=reply.headers, body=reply.body)


async def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` (sync) until true or ``timeout`` seconds passed (bounded loop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return bool(predicate())


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A fresh receiver on 127.0.0.1 (import this fixture into a test module to use it)."""
    r = await Receiver().start()
    try:
        yield r
    finally:
        await r.stop()
