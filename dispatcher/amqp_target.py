"""The RabbitMQ transport: each request becomes one persistent message published with a publisher confirm.

A request for ``amqp[s]://host[:port]/<vhost>?exchange=<name>`` (``whk.amqp_url``) is published to that
exchange with the event type as its routing key, ``mandatory`` set and ``delivery_mode`` 2 (persistent).
The message carries the exact bytes that were signed as its body and the signature as headers
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature``, ``content-type``), so a consumer verifies it
as an HTTP receiver verifies a request; ``message_id`` is the ``webhook-id`` (the same across retries:
consumers dedupe by it), ``type`` the event type. A batch request (a JSON array of envelopes) is one
message, routed by its events' type when they share one, else by ``batch``.

What comes back (``dispatcher.transport``'s contract, so HTTP's retries, breaker, per-key ordering, dead
letters and attempt log apply unchanged):

* the broker's ``basic.ack`` → 200 (``broker_ok``), the body saying where it went;
* a ``basic.nack``, a message returned as unroutable (no queue bound for its key: ``mandatory``), an
  exchange that does not exist or a refused permission → 500-like (``broker_refused``) with the reason;
* no broker (refused, reset, timeout, login refused, DNS) → the error class, retried and counted by the
  breaker; the connection is dropped and the next batch reconnects (re-resolving the name);
* an address the SSRF policy refuses → ``ssrf_blocked`` (the webhook is quarantined, as for HTTP).

One connection and one confirm channel per broker address and login, reused across batches; the messages of
a batch are published back to back on it and their confirms awaited together (pipelined), within one
deadline: the shortest of the batch's requests. The login is the webhook's encrypted basic credential
(``whk.queue_targets.broker_login``); it never goes into a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aio_pika
import aiormq
import msgspec
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from dispatcher.attempt import AttemptResult, ErrorClass, OutboundRequest
from dispatcher.transport import (
    Blocked,
    TargetGate,
    blocked,
    broker_ok,
    broker_refused,
    completed,
    failed,
    signed_fields,
)
from whk.amqp_connect import amqp_connect
from whk.amqp_url import AmqpAddress, AmqpTarget, parse_amqp_target
from whk.queue_targets import BrokerLogin, broker_login
from whk.settings import Settings

__all__ = ["AmqpTransport", "routing_key"]

_MAX_CONNECTIONS: Final = 256
_MAX_ROUTING_KEY: Final = 255
_BATCH_KEY: Final = "batch"


class _Envelope(msgspec.Struct):
    type: str


_ENVELOPES = msgspec.json.Decoder(_Envelope | list[_Envelope])


def routing_key(body: bytes) -> str:
    """The event type of an envelope (or of every envelope of a batch, else ``batch``)."""
    try:
        found = _ENVELOPES.decode(body)
    except msgspec.DecodeError:
        return _BATCH_KEY
    if isinstance(found, list):
        types = {e.type for e in found}
        key = types.pop() if len(types) == 1 else _BATCH_KEY
    else:
        key = found.type
    return key if len(key.encode("utf-8")) <= _MAX_ROUTING_KEY else _BATCH_KEY


_Key = tuple[AmqpAddress, str | None, str | None]


@dataclass(slots=True)
class _Link:
    """One broker connection with its confirm channel and the exchanges used on it."""

    connection: AbstractConnection
    channel: AbstractChannel
    address: str
    vhost: str
    exchanges: dict[str, AbstractExchange]

    @property
    def usable(self) -> bool:
        return not self.connection.is_closed and not self.channel.is_closed


class AmqpTransport:
    """``dispatcher.transport.Transport`` for ``amqp://`` and ``amqps://`` exchange targets."""

    def __init__(self, settings: Settings, *, connect_timeout_s: float = 10.0) -> None:
        self._gate = TargetGate(settings.core.allow_private_cidrs, parse_amqp_target, "AMQP")
        self._connect_timeout = connect_timeout_s
        self._links: dict[_Key, _Link] = {}
        self._locks: dict[_Key, asyncio.Lock] = {}

    async def _connect(self, addr: AmqpAddress, login: BrokerLogin | None) -> _Link:
        addresses = await self._gate.addresses(addr.host, addr.port)
        connection = await amqp_connect(
            # Plain AMQP dials the checked address itself (no second lookup to rebind); TLS connects by
            # name so the certificate's host name is verified (its addresses were checked just above).
            host=addr.host if addr.tls else addresses[0],
            port=addr.port,
            login="guest" if login is None or login.user is None else login.user,
            password="guest" if login is None else login.password,
            virtualhost=addr.vhost,
            ssl=addr.tls,
            timeout=self._connect_timeout,
            client_properties={"connection_name": "whk-dispatcher"},
        )
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        except BaseException:
            await connection.close()
            raise
        return _Link(connection, channel, addresses[0], addr.vhost, {})

    async def _link(self, key: _Key) -> _Link:
        link = self._links.get(key)
        if link is not None and link.usable:
            return link
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            link = self._links.get(key)
            if link is not None and link.usable:
                return link
            if link is not None:
                await self._drop(key)
            if len(self._links) >= _MAX_CONNECTIONS:
                await self._drop(next(iter(self._links)))
            link = self._links[key] = await self._connect(key[0], _login(key))
            return link

    async def _drop(self, key: _Key) -> None:
        link = self._links.pop(key, None)
        if link is not None:
            # Closing a broken connection may fail again; it is gone anyway.
            with contextlib.suppress(Exception):
                await link.connection.close()

    async def send(self, requests: Sequence[OutboundRequest]) -> list[AttemptResult]:
        started = time.perf_counter()
        results, admitted = self._gate.admit(requests, started)
        groups: dict[_Key, list[tuple[int, AmqpTarget]]] = {}
        for i, target in admitted:
            login = broker_login(requests[i].headers)
            key: _Key = (
                target.address,
                None if login is None else login.user,
                None if login is None else login.password,
            )
            groups.setdefault(key, []).append((i, target))
        await asyncio.gather(
            *(self._publish(key, items, requests, results, started) for key, items in groups.items())
        )
        return completed(results, started)

    async def _publish(
        self,
        key: _Key,
        items: list[tuple[int, AmqpTarget]],
        requests: Sequence[OutboundRequest],
        results: list[AttemptResult | None],
        started: float,
    ) -> None:
        deadline = min(requests[i].deadline_s for i, _ in items)
        host = key[0].host
        address: str | None = None
        error: ErrorClass
        try:
            async with asyncio.timeout(deadline):
                link = await self._link(key)
                address = link.address
                missing = await self._check_exchanges(link, {target.exchange for _, target in items})
            sendable = [(i, target) for i, target in items if target.exchange not in missing]
            left = deadline - (time.perf_counter() - started)
            outcomes = await _confirms([self._publish_one(link, t, requests[i]) for i, t in sendable], left)
        except Blocked as exc:
            blocked(exc, host, (i for i, _ in items), results, started)
            return
        except TimeoutError:
            error, detail = "timeout", f"no connection to RabbitMQ within {deadline:g}s"
        except (aiormq.exceptions.AuthenticationError, aiormq.exceptions.ProbableAuthenticationError) as exc:
            error, detail = "connect", f"RabbitMQ refused the login: {_text(exc)}"
        except socket.gaierror as exc:
            error, detail = "dns", f"cannot resolve {host}: {exc}"
        except aiormq.exceptions.ChannelClosed as exc:
            # Opening the channel failed (e.g. the virtual host is not allowed to this user).
            error, detail = "connect", f"RabbitMQ refused the channel: {_text(exc)}"
        except (aiormq.exceptions.AMQPError, ConnectionError, OSError, RuntimeError) as exc:
            error, detail = _connection_error(exc), f"{type(exc).__name__}: {_text(exc)}"
        else:
            for i, target in items:
                if target.exchange in missing:
                    results[i] = broker_refused(missing[target.exchange], started, remote_ip=address)
            broken = False
            for (i, target), outcome in zip(sendable, outcomes, strict=True):
                result, lost = _outcome(outcome, target, started, address)
                results[i] = result
                broken = broken or lost
            if broken:
                await self._drop(key)
            return
        # The connection is suspect: reconnect (and re-resolve) for the next batch.
        await self._drop(key)
        for i, _ in items:
            results[i] = failed(error, detail, started, remote_ip=address)

    async def _check_exchanges(self, link: _Link, names: set[str]) -> dict[str, str]:
        """The exchanges of ``names`` that cannot be published to, with why. Each is checked once per
        connection with a passive declare on a channel of its own: publishing to a missing (or forbidden)
        exchange would close the shared channel and fail every other webhook's messages on this broker."""
        unknown = [n for n in names if n not in link.exchanges]
        if not unknown:
            return {}
        refused: dict[str, str] = {}
        probe = await link.connection.channel(publisher_confirms=False)
        try:
            for name in unknown:
                if probe.is_closed:
                    await probe.reopen()
                try:
                    await probe.declare_exchange(name, passive=True)
                except aiormq.exceptions.ChannelNotFoundEntity:
                    refused[name] = f"exchange {name!r} does not exist in virtual host {link.vhost!r}"
                    continue
                except aiormq.exceptions.ChannelClosed as exc:
                    refused[name] = f"exchange {name!r}: {_text(exc)}"
                    continue
                link.exchanges[name] = await link.channel.get_exchange(name, ensure=False)
        finally:
            if not probe.is_closed:
                await probe.close()
        return refused

    async def _publish_one(self, link: _Link, target: AmqpTarget, req: OutboundRequest) -> str:
        exchange = link.exchanges[target.exchange]
        fields = dict(signed_fields(req))
        key = routing_key(req.body)
        message = aio_pika.Message(
            req.body,
            headers=dict(fields),
            content_type=fields.get("content-type", "application/json"),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=fields.get("webhook-id"),
            type=key,
            app_id="whk",
        )
        confirm = await exchange.publish(message, key, mandatory=True)
        tag = getattr(confirm, "delivery_tag", None)
        where = f"exchange {target.exchange!r}, routing key {key!r}"
        return f"confirmed by RabbitMQ: {where}" + (f", delivery tag {tag}" if tag is not None else "")

    async def aclose(self) -> None:
        for key in list(self._links):
            await self._drop(key)


async def _confirms(publishes: list[Coroutine[Any, Any, str]], within_s: float) -> list[str | BaseException]:
    """Each publish's confirm (or error) within ``within_s``; one still unconfirmed then is a TimeoutError, so
    the messages confirmed in time count as delivered (no needless duplicates)."""
    tasks = [asyncio.ensure_future(p) for p in publishes]
    if not tasks:
        return []
    try:
        _, pending = await asyncio.wait(tasks, timeout=max(within_s, 0.001))
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        raise
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    out: list[str | BaseException] = []
    for task in tasks:
        if task in pending:
            out.append(TimeoutError(f"no confirm within {within_s:.3g}s"))
        else:
            exc = task.exception()
            out.append(exc if exc is not None else task.result())
    return out


def _login(key: _Key) -> BrokerLogin | None:
    _, user, password = key
    return None if password is None else BrokerLogin(user, password)


def _text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:300]


def _connection_error(exc: BaseException) -> ErrorClass:
    # aiormq wraps the socket error as AMQPConnectionError(errno, text).
    code = exc.errno if isinstance(exc, OSError) else (exc.args[0] if exc.args else None)
    if isinstance(exc, ConnectionRefusedError) or code == errno.ECONNREFUSED:
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | aiormq.exceptions.ConnectionClosed):
        return "reset"
    if isinstance(exc, aiormq.exceptions.ChannelInvalidStateError) or "reset" in str(exc).lower():
        return "reset"
    return "connect"


def _outcome(
    outcome: str | BaseException, target: AmqpTarget, started: float, address: str | None
) -> tuple[AttemptResult, bool]:
    """One publish's result, and whether the connection (or channel) is now unusable."""
    if isinstance(outcome, str):
        return broker_ok(outcome, started, remote_ip=address), False
    if isinstance(outcome, aiormq.exceptions.PublishError):
        reason = f"unroutable: no queue is bound to exchange {target.exchange!r} for this routing key"
        return broker_refused(reason, started, remote_ip=address), False
    if isinstance(outcome, aiormq.exceptions.DeliveryError):
        reason = f"the broker nacked the message: {_text(outcome)}"
        return broker_refused(reason, started, remote_ip=address), False
    if isinstance(outcome, aiormq.exceptions.ChannelNotFoundEntity):
        # Deleted since it was checked: the channel is closed, the next batch reconnects and checks again.
        reason = f"exchange {target.exchange!r} does not exist in virtual host {target.address.vhost!r}"
        return broker_refused(reason, started, remote_ip=address), True
    if isinstance(outcome, aiormq.exceptions.ChannelClosed):
        reason = f"the broker closed the channel: {_text(outcome)}"
        return broker_refused(reason, started, remote_ip=address), True
    if isinstance(outcome, TimeoutError):
        # The broker is stuck (flow control, an alarm) or the connection silently died: reconnect.
        return failed("timeout", f"{_text(outcome)} from RabbitMQ", started, remote_ip=address), True
    if isinstance(outcome, asyncio.CancelledError):
        raise outcome
    if isinstance(outcome, Exception):
        return failed(
            _connection_error(outcome),
            f"{type(outcome).__name__}: {_text(outcome)}",
            started,
            remote_ip=address,
        ), True
    raise outcome
