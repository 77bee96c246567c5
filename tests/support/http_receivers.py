"""Loopback-only HTTP receivers for sender tests: a counting aiohttp app and raw asyncio servers.

Every server here binds a 127.0.0.0/8 (or ::1) address; nothing in this module connects anywhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    peer_port: int


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Receiver:
    """A counting aiohttp receiver; ``routes`` maps a path to a handler (default: 200 "ok")."""

    host: str = "127.0.0.1"
    routes: dict[str, Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def count(self) -> int:
        return len(self.seen)

    def url(self, path: str = "/hook") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.seen.append(
            Seen(request.method, request.path, dict(request.headers), body, int(peer[1]) if peer else 0)
        )
        handler = self.routes.get(request.path)
        if handler is None:
            return web.Response(status=200, text="ok")
        return await handler(request)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@asynccontextmanager
async def receiver(
    host: str = "127.0.0.1", routes: dict[str, Handler] | None = None
) -> AsyncIterator[Receiver]:
    """``async with receiver(routes={"/x": handler}) as r``; ``r.routes`` may change afterwards."""
    r = await Receiver(host=host, routes=dict(routes or {})).start()
    try:
        yield r
    finally:
        await r.stop()


ConnHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawServer:
    port: int
    host: str
    connections: int = 0
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"


@asynccontextmanager
async def raw_server(handler: ConnHandler, host: str = "127.0.0.1") -> AsyncIterator[RawServer]:
    """A TCP server whose connections are handled by ``handler`` (drip, hang, reset, garbage)."""
    state = RawServer(port=0, host=host)

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        task = asyncio.current_task()
        if task is not None:
            state.tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_conn, host, 0)
    state.port = int(server.sockets[0].getsockname()[1])
    try:
        yield state
    finally:
        server.close()
        for task in list(state.tasks):
            task.cancel()
        await asyncio.gather(*state.tasks, return_exceptions=True)
        await server.wait_closed()


async def read_request_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def free_port() -> int:
    """A loopback port with nothing listening (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StubResolver(AbstractResolver):
    """Answers from a script: each call pops the next answer (a list of IPs); the last one repeats.
    An empty answer raises ``socket.gaierror`` (NXDOMAIN) — no DNS query ever leaves the machine."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = [list(a) for a in answers]
        self.calls: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls.append(host)
        ips = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if not ips:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            ResolveResult(
                hostname=host,
                host=ip,
                port=port,
                family=socket.AF_INET6 if ":" in ip else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for ip in ips
        ]

    async def close(self) -> None:
        return None


@dataclass
class LoopbackGuard:
    """What a test's event loop dialed and looked up; anything beyond loopback is a violation."""

    dialed: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)


def _numeric(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        try:
            socket.inet_aton(host)  # the forms getaddrinfo parses itself, without asking DNS
        except OSError:
            return False
    return True


def install_loopback_guard(loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> LoopbackGuard:
    """Wrap ``loop.sock_connect`` and ``loop.getaddrinfo``: a connect beyond loopback or a real DNS
    query fails (before any packet is sent) and is recorded as a violation."""
    guard = LoopbackGuard()
    real_connect = loop.sock_connect
    real_getaddrinfo = loop.getaddrinfo

    async def sock_connect(sock: socket.socket, address: Any) -> None:
        host = str(address[0])
        guard.dialed.append(host)
        addr = ipaddress.ip_address(host.split("%")[0])
        mapped = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) else None
        if not (addr.is_loopback or (mapped is not None and mapped.is_loopback)):
            guard.violations.append(f"connect {host}")
            raise AssertionError(f"test tried to connect beyond loopback: {host}")
        await real_connect(sock, address)

    async def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _numeric(str(host)):
            guard.violations.append(f"dns {host}")
            raise AssertionError(f"test tried a real DNS lookup of {host}")
        return await real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(loop, "sock_connect", sock_connect)
    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return guard
