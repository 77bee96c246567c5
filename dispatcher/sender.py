"""The dispatcher's HTTP sender: aiohttp on the delivery hot path, with the SSRF guard built in.

This is the only module that imports aiohttp (httpx is the client everywhere else): measured here,
one process pushes ~10-15k POST/s through aiohttp and ~0.4-0.9k/s through httpx's own pool.

What every attempt gets:

* **SSRF guard at connect time.** ``GuardedResolver`` wraps the real resolver (aiohttp's
  ThreadedResolver by default) and checks EVERY address a name resolves to with
  ``whk.urlpolicy.check_address``; one refused address refuses the host (a name that answers
  both public and private records is an attack, not a fallback). The connector only ever dials
  the addresses that resolution returned — resolve once, check, connect to exactly those — so a
  second, rebinding DNS answer is never consulted. Literal IP hosts (which aiohttp does not
  resolve) are checked by ``whk.urlpolicy.check_url`` before anything happens, and again by the
  connector's socket factory, which refuses to create a socket for any unchecked address.
* **No redirects** (``allow_redirects=False``): a 3xx is returned with its ``Location``.
* **Client-owned headers** (Host, Content-Length, Transfer-Encoding, Connection, Upgrade, TE,
  Trailer, Expect, Keep-Alive, Proxy-*) are dropped from the request's headers: framing and the
  target come from the body and the URL, never from per-webhook configuration.
* **No ambient configuration**: ``trust_env=False`` (HTTP(S)_PROXY, .netrc ignored), no cookie jar
  (a receiver's cookies never travel to another webhook), no transparent decompression (a
  gzip bomb cannot inflate past the cap; ``Accept-Encoding: identity`` is sent).
* **TLS verification on** (system trust store unless a context is injected for tests).
* **One overall deadline** per attempt (``asyncio.timeout(req.deadline_s)``) around waiting for a
  pooled connection, resolution, connect, TLS, sending, the response head and the capped body:
  a receiver dripping one byte per second cannot hold an attempt past it.
* **Capped response body**: at most the request's ``max_body_bytes`` (the setting
  ``delivery.response_body_max_bytes``; else the sender's, 20,000) are read and kept;
  ``body_truncated`` records that more was sent, and that connection is closed, not reused.
* **Pooling** per host with limits (``limit`` overall, ``WHK_DISPATCHER_HOST_CONCURRENCY`` per host) so one
  slow endpoint cannot take every connection; waiting for a slot counts against the attempt's own deadline.
* ``send`` **never raises for network trouble**: it returns an ``AttemptResult`` with an
  ``error_class`` (timeout, connect, refused, reset, ssrf_blocked, tls, dns, too_large, protocol).
  Cancellation (shutdown) propagates.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import ssl
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.payload import BytesPayload
from aiohttp.resolver import DefaultResolver

import whk
from dispatcher.attempt import AttemptResult, ErrorClass, OutboundRequest
from whk.settings import Settings
from whk.urlpolicy import Network, check_address, check_url

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "USER_AGENT",
    "AttemptResult",
    "GuardedResolver",
    "OutboundRequest",
    "Sender",
    "SenderStats",
    "SsrfBlockedError",
]

DEFAULT_MAX_BODY_BYTES: Final = 20_000
USER_AGENT: Final = f"WHK-Webhooks/{whk.__version__}"
_MAX_DETAIL: Final = 300
_URL_CACHE_SIZE: Final = 4096
_NAME_CACHE_SIZE: Final = 1024
# Request headers the client owns: framing, connection management and the target host come from the
# URL and the body, never from per-webhook configuration (no request smuggling, no Host spoofing).
_CLIENT_OWNED_HEADERS: Final = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "expect",
        "proxy-authorization",
        "proxy-connection",
    }
)
# Response headers kept per attempt (aiohttp itself allows 128 lines of 8190 bytes: ~1 MB per row).
MAX_HEADER_BYTES: Final = 16_384


class SsrfBlockedError(OSError):
    """Raised inside aiohttp (resolver / socket factory) when the SSRF policy refuses an address."""

    def __init__(self, rule: str, address: str, host: str | None = None) -> None:
        via = f" (resolved from {host})" if host and host != address else ""
        self.where = f"{address}{via}"
        super().__init__(errno.EACCES, f"ssrf_blocked: {rule} {self.where}")
        self.rule = rule
        self.address = address
        self.host = host


@dataclass(slots=True)
class SenderStats:
    """Counters for metrics and tests; ``dialed`` keeps the last addresses a socket was made for."""

    attempts: int = 0
    blocked: int = 0
    dials: int = 0
    dialed: deque[str] = field(default_factory=lambda: deque(maxlen=256))


class GuardedResolver(AbstractResolver):
    """Resolves with ``inner`` and refuses the host if any resolved address is not allowed."""

    def __init__(self, inner: AbstractResolver, allow: Sequence[Network], stats: SenderStats) -> None:
        self._inner = inner
        self._allow = tuple(allow)
        self._stats = stats

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not results:
            raise OSError(errno.EHOSTUNREACH, f"{host} resolved to no address")
        for result in results:
            try:
                addr = ipaddress.ip_address(result["host"])
            except ValueError as exc:
                raise SsrfBlockedError("invalid-host", result["host"], host) from exc
            rule = check_address(addr, self._allow)
            if rule is not None:
                raise SsrfBlockedError(rule, result["host"], host)
        return results

    async def close(self) -> None:
        await self._inner.close()


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything behind it (aiohttp's ``os_error``, causes, contexts), once each."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        cur = todo.pop()
        if cur is None or any(cur is s for s in seen):
            continue
        seen.append(cur)
        todo.extend([getattr(cur, "os_error", None), cur.__cause__, cur.__context__])
    return seen


def _find_blocked(exc: BaseException) -> SsrfBlockedError | None:
    """The SsrfBlockedError behind an aiohttp connector error, if any."""
    return next((e for e in _chain(exc) if isinstance(e, SsrfBlockedError)), None)


def _too_large(exc: BaseException) -> bool:
    return any(
        isinstance(e, aiohttp.http_exceptions.LineTooLong)
        or "Got more than" in str(e)
        or "Too many headers" in str(e)
        for e in _chain(exc)
    )


def _detail(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def _classify_exception(exc: BaseException) -> ErrorClass:
    """Map an aiohttp/OS exception to the contract's error classes."""
    if _find_blocked(exc) is not None:
        return "ssrf_blocked"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError | ssl.SSLError):
        return "tls"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
            return "refused"
        return "connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError | ConnectionResetError | BrokenPipeError):
        return "reset"
    if _too_large(exc):
        return "too_large"  # a response head line beyond aiohttp's 8190-byte limit
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "reset"  # the body broke off (connection lost or truncated transfer)
    if isinstance(exc, aiohttp.ClientResponseError):
        return "protocol"  # not HTTP, or malformed HTTP
    if isinstance(exc, aiohttp.ClientOSError):
        if exc.errno in (errno.ECONNRESET, errno.EPIPE):
            return "reset"
        return "connect"
    if isinstance(exc, OSError):
        return "connect"
    return "protocol"


async def _read_capped(content: aiohttp.StreamReader, cap: int) -> tuple[bytes, bool]:
    """Read at most ``cap`` bytes; True when the body had more (the rest is not read)."""
    first = await content.read(cap + 1)
    if content.at_eof() or not first:
        # The usual small answer arrives whole with the head: one read, no copy.
        return (first[:cap], True) if len(first) > cap else (first, False)
    buf = bytearray(first)
    while len(buf) <= cap:
        chunk = await content.read(cap + 1 - len(buf))
        if not chunk:
            break
        buf += chunk
    if len(buf) > cap:
        return bytes(buf[:cap]), True
    return bytes(buf), False


def _capped_headers(raw: tuple[tuple[bytes, bytes], ...]) -> tuple[list[tuple[str, str]], bool]:
    """Response headers as text, at most MAX_HEADER_BYTES of names and values; True if some were dropped."""
    kept: list[tuple[str, str]] = []
    budget = MAX_HEADER_BYTES
    for name, value in raw:
        budget -= len(name) + len(value)
        if budget < 0:
            return kept, True
        kept.append((name.decode("latin-1"), value.decode("latin-1")))
    return kept, False


def _peer_ip(resp: aiohttp.ClientResponse) -> str | None:
    # Best effort: the connection may already be back in the pool once the head and a small body
    # arrived, so ask the protocol's transport (a test pins this across aiohttp upgrades).
    protocol: Any = getattr(resp, "_protocol", None)
    transport = getattr(protocol, "transport", None)
    if transport is None:
        return None
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if peer else None


class Sender:
    """Sends ``OutboundRequest``s; use as ``async with Sender(settings) as sender``."""

    def __init__(
        self,
        settings: Settings,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        limit: int | None = None,
        connect_timeout_s: float = 10.0,
        keepalive_timeout_s: float = 15.0,
        resolver: AbstractResolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        if max_body_bytes < 0:
            raise ValueError("max_body_bytes must be >= 0")
        concurrency = settings.dispatcher.concurrency
        self._allow: tuple[Network, ...] = tuple(settings.core.allow_private_cidrs)
        self._max_body = max_body_bytes
        self._limit = limit if limit is not None else concurrency
        # One host may use at most WHK_DISPATCHER_HOST_CONCURRENCY slots (half the pool by default): a stuck
        # receiver cannot take them all.
        self._limit_per_host = settings.dispatcher.connections_per_host
        self._connect_timeout = connect_timeout_s
        self._keepalive = keepalive_timeout_s
        self._inner_resolver = resolver
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._headers = {"User-Agent": user_agent, "Accept-Encoding": "identity"}
        self._session: aiohttp.ClientSession | None = None
        self._resolver: GuardedResolver | None = None
        # URL → policy verdict; the policy is a pure function of (url, allow), so this only saves CPU.
        self._url_verdicts: dict[str, str | None] = {}
        # Header name (as given) → whether the client owns it; a pure function of the name.
        self._owned_names: dict[str, bool] = {}
        self.stats = SenderStats()

    async def __aenter__(self) -> Sender:
        inner = self._inner_resolver if self._inner_resolver is not None else DefaultResolver()
        self._resolver = GuardedResolver(inner, self._allow, self.stats)
        connector = aiohttp.TCPConnector(
            limit=self._limit,
            limit_per_host=self._limit_per_host,
            resolver=self._resolver,
            socket_factory=self._socket_factory,
            ssl=self._ssl,
            keepalive_timeout=self._keepalive,
            ttl_dns_cache=10,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            headers=self._headers,
            raise_for_status=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._resolver is not None:
            await self._resolver.close()  # the connector closes only resolvers it created itself
            self._resolver = None

    def _socket_factory(self, addr_info: Any) -> socket.socket:
        """Last line of defence: no socket for an address the policy refuses (literal IPs too)."""
        family, type_, proto, _, sockaddr = addr_info
        host = str(sockaddr[0])
        rule = check_address(ipaddress.ip_address(host), self._allow)
        if rule is not None:
            raise SsrfBlockedError(rule, host)
        self.stats.dials += 1
        self.stats.dialed.append(host)
        return socket.socket(family, type_, proto)

    def _sendable(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """``headers`` without the client-owned ones (names looked up in a bounded per-name cache)."""
        owned = self._owned_names
        out: list[tuple[str, str]] = []
        for name, value in headers:
            drop = owned.get(name)
            if drop is None:
                if len(owned) >= _NAME_CACHE_SIZE:
                    owned.clear()
                drop = owned[name] = name.lower() in _CLIENT_OWNED_HEADERS
            if not drop:
                out.append((name, value))
        return out

    def _check_url(self, url: str) -> str | None:
        try:
            return self._url_verdicts[url]
        except KeyError:
            pass
        if len(self._url_verdicts) >= _URL_CACHE_SIZE:
            self._url_verdicts.clear()
        rule = self._url_verdicts[url] = check_url(url, self._allow)
        return rule

    def _blocked(self, rule: str, address: str | None, detail: str, started: float) -> AttemptResult:
        self.stats.blocked += 1
        return AttemptResult(
            status=None,
            headers=[],
            body=b"",
            body_truncated=False,
            duration_ms=(time.perf_counter() - started) * 1000.0,
            error_class="ssrf_blocked",
            error_detail=f"{rule}: {detail}",
            location=None,
            remote_ip=address,
        )

    async def send(self, req: OutboundRequest) -> AttemptResult:
        """Make one attempt. Returns what happened; raises only for misuse or cancellation."""
        session = self._session
        if session is None:
            raise RuntimeError("Sender is not open: use `async with Sender(settings) as sender`")
        self.stats.attempts += 1
        started = time.perf_counter()
        rule = self._check_url(req.url)
        if rule is not None:
            return self._blocked(rule, None, f"URL refused before connecting ({req.url[:200]})", started)

        status: int | None = None
        headers: list[tuple[str, str]] = []
        body = b""
        truncated = headers_truncated = False
        location: str | None = None
        remote_ip: str | None = None
        error: ErrorClass | None = None
        detail: str | None = None
        try:
            async with asyncio.timeout(req.deadline_s):
                async with session.request(
                    req.method,
                    req.url,
                    headers=self._sendable(req.headers),
                    # A ready payload skips aiohttp's registry lookup (the same BytesPayload it would make).
                    data=BytesPayload(req.body),
                    allow_redirects=False,
                ) as resp:
                    status = resp.status
                    headers, headers_truncated = _capped_headers(resp.raw_headers)
                    location = resp.headers.get("Location") if 300 <= status < 400 else None
                    remote_ip = _peer_ip(resp)
                    cap = self._max_body if req.max_body_bytes is None else req.max_body_bytes
                    body, truncated = await _read_capped(resp.content, cap)
                    if truncated:
                        resp.close()  # the rest is unread: this connection cannot be reused
        except TimeoutError as exc:
            error = "timeout"
            if isinstance(exc, aiohttp.ServerTimeoutError):  # aiohttp's own per-connect limit
                detail = f"no TCP connection within {self._connect_timeout:g}s"
            else:
                # The status is set once the head is in: the body was being read (no f-string per request).
                phase = (
                    "before the response head"
                    if status is None
                    else f"reading the body after status {status}"
                )
                detail = f"deadline of {req.deadline_s:g}s passed {phase}"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            blocked = _find_blocked(exc)
            if blocked is not None:
                return self._blocked(blocked.rule, blocked.address, blocked.where, started)
            error = _classify_exception(exc)
            detail = f"{type(exc).__name__}: {_detail(exc)}"
        return AttemptResult(
            status=status,
            headers=headers,
            body=body,
            body_truncated=truncated,
            headers_truncated=headers_truncated,
            duration_ms=(time.perf_counter() - started) * 1000.0,
            error_class=error,
            error_detail=detail,
            location=location,
            remote_ip=remote_ip,
        )
