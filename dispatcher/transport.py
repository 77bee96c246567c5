"""Transports: how a signed request reaches its target, chosen by the webhook URL's scheme.

The engine builds one signed ``OutboundRequest`` per attempt and hands it to ``Transports.send``; what comes
back is an ``AttemptResult``, classified the same way whatever carried it (``dispatcher.classify``). So queue
targets get HTTP's retries, breaker, per-key ordering, dead letters and attempt log for free.

* ``http``/``https`` go straight to the aiohttp ``Sender`` (one request each: the hot path is unchanged).
* A queue scheme (``redis``/``rediss``: ``dispatcher.redis_target``; ``amqp``/``amqps``: the RabbitMQ
  transport) goes to a ``Transport``: the requests started in the same event-loop turn (one dispatch round)
  are handed over together, so a transport can pipeline them (one ``XADD`` pipeline, one batch of publisher
  confirms).

What a queue transport promises (the contract a new broker implements):

* ``send(requests)`` returns one ``AttemptResult`` per request, in order, and **never raises** for broker
  trouble (only for cancellation).
* The broker's confirm is the response: ``broker_ok`` (status 200, the broker's message id as the body).
  A refusal of one message (wrong key type, …) is ``broker_refused`` (a 5xx-like retry). A broker that
  cannot be reached, drops the connection or times out gives ``error_class`` refused/connect/reset/timeout:
  retried, and counted by the breaker, which opens while the broker stays down. An address the SSRF policy
  refuses is ``ssrf_blocked`` (the webhook is quarantined, as for HTTP).
* The Standard Webhooks signature travels in the message (Redis stream fields, AMQP headers):
  ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``, ``content-type`` and the body, so a consumer
  verifies it exactly as an HTTP receiver does (``signed_fields``).
* The broker login is the webhook's encrypted basic credential, seen here as ``Authorization: Basic``
  (``whk.queue_targets.broker_login``); it is never put in a message.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Final, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

from dispatcher.attempt import AttemptResult, ErrorClass, OutboundRequest
from whk.queue_targets import QueueUrlError
from whk.urlpolicy import Network, check_address, check_url

__all__ = [
    "SIGNED_FIELDS",
    "Blocked",
    "HttpSender",
    "Resolver",
    "TargetGate",
    "Transport",
    "Transports",
    "blocked",
    "broker_ok",
    "broker_refused",
    "completed",
    "failed",
    "signed_fields",
]

# The message fields a queue consumer verifies (the HTTP header names, lower-case), plus the body.
SIGNED_FIELDS: Final = ("webhook-id", "webhook-timestamp", "webhook-signature", "content-type")
# One flush hands a transport at most this many requests (the rest go in the next one).
_MAX_BATCH: Final = 1000


class Transport(Protocol):
    """Sends a batch of signed requests to one kind of queue target (see the module docstring)."""

    async def send(self, requests: Sequence[OutboundRequest]) -> list[AttemptResult]:
        """One result per request, in order; never raises for broker trouble."""
        ...

    async def aclose(self) -> None:
        """Close every broker connection."""
        ...


class HttpSender(Protocol):
    """The HTTP side (``dispatcher.sender.Sender``): one request at a time."""

    async def send(self, req: OutboundRequest) -> AttemptResult: ...


def signed_fields(req: OutboundRequest) -> list[tuple[str, str]]:
    """The signature headers of ``req`` as message fields (lower-case names, ``SIGNED_FIELDS`` order)."""
    found = {name.lower(): value for name, value in req.headers if name.lower() in SIGNED_FIELDS}
    return [(name, found[name]) for name in SIGNED_FIELDS if name in found]


def broker_ok(message_id: str, started: float, *, remote_ip: str | None = None) -> AttemptResult:
    """The broker confirmed the message: a 200 whose body is the broker's id for it."""
    return AttemptResult(
        status=200,
        headers=[],
        body=message_id.encode("utf-8"),
        body_truncated=False,
        duration_ms=(time.perf_counter() - started) * 1000.0,
        error_class=None,
        error_detail=None,
        location=None,
        remote_ip=remote_ip,
    )


def broker_refused(reason: str, started: float, *, remote_ip: str | None = None) -> AttemptResult:
    """The broker answered but refused this message: retried like an HTTP 500 (the reason is the body)."""
    return AttemptResult(
        status=500,
        headers=[],
        body=reason[:2000].encode("utf-8"),
        body_truncated=False,
        duration_ms=(time.perf_counter() - started) * 1000.0,
        error_class=None,
        error_detail=f"broker refused the message: {reason[:300]}",
        location=None,
        remote_ip=remote_ip,
    )


def failed(
    error_class: ErrorClass, detail: str, started: float, *, remote_ip: str | None = None
) -> AttemptResult:
    """No confirm: the broker was unreachable, dropped the connection, timed out or was refused."""
    return AttemptResult(
        status=None,
        headers=[],
        body=b"",
        body_truncated=False,
        duration_ms=(time.perf_counter() - started) * 1000.0,
        error_class=error_class,
        error_detail=detail[:300],
        location=None,
        remote_ip=remote_ip,
    )


# host, port → every address it resolves to (tests inject answers, as the HTTP sender's tests do).
Resolver = Callable[[str, int], Awaitable[list[str]]]
T = TypeVar("T")
_MAX_TARGET_CACHE: Final = 4096


async def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class Blocked(Exception):
    """A broker host resolved to an address the SSRF policy refuses."""

    def __init__(self, rule: str, address: str | None) -> None:
        super().__init__(rule)
        self.rule = rule
        self.address = address


class TargetGate(Generic[T]):
    """What every queue transport does before it talks to a broker: the SSRF policy on each request's URL,
    the URL parsed into the broker's target (cached per URL), and, when connecting, every address the host
    resolves to checked, so the transport dials a checked address (no second lookup to rebind)."""

    def __init__(
        self,
        allow: Sequence[Network],
        parse: Callable[[str], T],
        broker: str,
        resolver: Resolver | None = None,
    ) -> None:
        self._allow: tuple[Network, ...] = tuple(allow)
        self._parse = parse
        self._broker = broker
        self._resolve = resolver or _getaddrinfo
        self._targets: dict[str, T | QueueUrlError] = {}

    def target(self, url: str) -> T:
        cached = self._targets.get(url)
        if cached is None:
            if len(self._targets) >= _MAX_TARGET_CACHE:
                self._targets.clear()
            try:
                cached = self._parse(url)
            except QueueUrlError as exc:
                cached = exc
            self._targets[url] = cached
        if isinstance(cached, QueueUrlError):
            raise cached
        return cached

    def admit(
        self, requests: Sequence[OutboundRequest], started: float
    ) -> tuple[list[AttemptResult | None], list[tuple[int, T]]]:
        """A result slot per request (filled for the refused ones) and the admitted (index, target)."""
        results: list[AttemptResult | None] = [None] * len(requests)
        admitted: list[tuple[int, T]] = []
        for i, req in enumerate(requests):
            rule = check_url(req.url, self._allow)
            if rule is not None:
                results[i] = failed("ssrf_blocked", f"{rule}: URL refused before connecting", started)
                continue
            try:
                admitted.append((i, self.target(req.url)))
            except QueueUrlError as exc:
                results[i] = failed("protocol", f"bad {self._broker} target URL: {exc}", started)
        return results, admitted

    async def addresses(self, host: str, port: int) -> list[str]:
        """Every address ``host`` resolves to, each allowed by the policy (else ``Blocked``)."""
        addresses = await self._resolve(host, port)
        if not addresses:
            raise OSError(f"{host} resolved to no address")
        for address in addresses:
            rule = check_address(ipaddress.ip_address(address.split("%", 1)[0]), self._allow)
            if rule is not None:
                raise Blocked(rule, address)
        return addresses


def blocked(
    exc: Blocked, host: str, indices: Iterable[int], results: list[AttemptResult | None], started: float
) -> None:
    """Fill the results of the requests a refused broker address stopped."""
    for i in indices:
        results[i] = failed(
            "ssrf_blocked",
            f"{exc.rule}: {exc.address} (resolved from {host})",
            started,
            remote_ip=exc.address,
        )


def completed(results: list[AttemptResult | None], started: float) -> list[AttemptResult]:
    """Every slot filled (one left empty is a transport bug, reported as a protocol failure)."""
    return [r if r is not None else failed("protocol", "no result", started) for r in results]


class _Coalescer:
    """Collects the requests for one transport during an event-loop turn and sends them as one batch."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._waiting: list[tuple[OutboundRequest, asyncio.Future[AttemptResult]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, req: OutboundRequest) -> asyncio.Future[AttemptResult]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[AttemptResult] = loop.create_future()
        if not self._waiting:
            # Runs after every task already scheduled in this turn has submitted its request.
            loop.call_soon(self._flush)
        self._waiting.append((req, fut))
        return fut

    def _flush(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:_MAX_BATCH], self._waiting[_MAX_BATCH:]
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[OutboundRequest, asyncio.Future[AttemptResult]]]) -> None:
        started = time.perf_counter()
        try:
            results = await self._transport.send([req for req, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"transport returned {len(results)} results for {len(batch)} requests")
        except asyncio.CancelledError:
            for _, fut in batch:
                fut.cancel()
            raise
        except Exception as exc:  # a transport bug: fail these attempts, keep the dispatcher going
            results = [failed("protocol", f"transport error: {type(exc).__name__}: {exc}", started)] * len(
                batch
            )
        for (_, fut), result in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(result)

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._transport.aclose()


class Transports:
    """Sends each request with the transport of its URL scheme (what the engine calls its sender)."""

    def __init__(self, http: HttpSender, queues: Mapping[str, Transport] | None = None) -> None:
        self._http = http
        # One coalescer per transport, even when it serves several schemes (redis and rediss): their
        # requests share batches, and it is closed once.
        by_transport: dict[int, _Coalescer] = {}
        self._queues: dict[str, _Coalescer] = {}
        for scheme, transport in (queues or {}).items():
            coalescer = by_transport.setdefault(id(transport), _Coalescer(transport))
            self._queues[scheme.lower()] = coalescer
        self._distinct = list(by_transport.values())

    async def send(self, req: OutboundRequest) -> AttemptResult:
        """Make one attempt; raises only for misuse or cancellation."""
        scheme = req.url.partition(":")[0].lower()
        if scheme in ("http", "https"):
            return await self._http.send(req)
        coalescer = self._queues.get(scheme)
        if coalescer is None:
            detail = f"no transport for {urlsplit(req.url).scheme or 'this'}:// targets in this dispatcher"
            return failed("protocol", detail, time.perf_counter())
        # Shielded: a cancelled attempt (shutdown) must not cancel the batch other attempts share.
        return await asyncio.shield(coalescer.submit(req))

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self._distinct), return_exceptions=True)
