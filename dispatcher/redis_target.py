"""The Redis stream transport: each batch of requests becomes one pipelined ``XADD … MAXLEN ~ N`` per target.

A request for ``redis[s]://host[:port]/<stream>?maxlen=N&db=N`` (``whk.queue_targets``) becomes one stream
entry whose fields are ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``, ``content-type`` and
``body`` (the exact bytes that were signed): a consumer verifies it as an HTTP receiver verifies headers.
The entry id Redis returns is the attempt's "response" (status 200, the id as the body).

* **SSRF**: the URL passes ``whk.urlpolicy.check_url``; the host is resolved once per connection and every
  address is checked with ``check_address`` before anything is dialled; plain ``redis://`` then connects to
  the checked address itself (no second lookup to rebind). ``rediss://`` connects by name so the
  certificate's host name is verified (its addresses were checked just before).
* **Login**: the webhook's basic credential (``whk.queue_targets.broker_login``), never a URL's userinfo.
* **Failures** (``dispatcher.transport``'s contract): a connection that cannot be made, breaks or times out
  fails the whole pipeline (refused/connect/reset/timeout: retried, counted by the breaker) and the client
  is dropped, so the next batch re-resolves and reconnects. A command Redis refuses (a key of another type,
  an ACL denial) fails only its own request (``broker_refused``). redis-py's own retries are off: the
  delivery schedule is the one retry policy.
* Deadline: one ``asyncio.timeout`` per pipeline, the shortest deadline of its requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Sequence
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dispatcher.attempt import AttemptResult, ErrorClass, OutboundRequest
from dispatcher.transport import (
    Blocked,
    Resolver,
    TargetGate,
    blocked,
    broker_ok,
    broker_refused,
    completed,
    failed,
    signed_fields,
)
from whk.queue_targets import BrokerLogin, RedisTarget, broker_login, parse_redis_url
from whk.settings import Settings

__all__ = ["RedisTransport"]

_MAX_CLIENTS: Final = 256
# Connections per target: pipelines of concurrent batches may overlap.
_CONNECTIONS_PER_TARGET: Final = 8

_Key = tuple[str, str, int, int, str | None, str | None]


def _key(target: RedisTarget, login: BrokerLogin | None) -> _Key:
    """One client (and pool) per server, database and login."""
    return (
        "rediss" if target.tls else "redis",
        target.host,
        target.port,
        target.db,
        None if login is None else login.user,
        None if login is None else login.password,
    )


def _connection_error(exc: BaseException) -> ErrorClass:
    """refused / reset / connect, from the OS error behind redis-py's ConnectionError."""
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 10:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "refused"
    if any(isinstance(e, ConnectionResetError | BrokenPipeError) for e in chain) or any(
        "closed by server" in str(e).lower() for e in chain
    ):
        return "reset"
    return "connect"


class RedisTransport:
    """``dispatcher.transport.Transport`` for ``redis://`` and ``rediss://`` stream targets."""

    def __init__(
        self, settings: Settings, *, connect_timeout_s: float = 10.0, resolver: Resolver | None = None
    ) -> None:
        self._gate = TargetGate(settings.core.allow_private_cidrs, parse_redis_url, "Redis", resolver)
        self._connect_timeout = connect_timeout_s
        # One client (and pool) per target server and login, with the address it was checked at.
        self._clients: dict[_Key, tuple[aioredis.Redis, str]] = {}
        self._creating = asyncio.Lock()

    async def _client(self, target: RedisTarget, login: BrokerLogin | None) -> tuple[aioredis.Redis, str]:
        key = _key(target, login)
        found = self._clients.get(key)
        if found is not None:
            return found
        # Concurrent batches for a new target must share one client: create it under a lock.
        async with self._creating:
            found = self._clients.get(key)
            if found is None:
                found = await self._connect(key, target, login)
            return found

    async def _connect(
        self, key: _Key, target: RedisTarget, login: BrokerLogin | None
    ) -> tuple[aioredis.Redis, str]:
        addresses = await self._gate.addresses(target.host, target.port)
        # A blocking pool: a batch waits (within its deadline) for a free connection. redis-py's default
        # pool raises "Too many connections" instead, which would count against the breaker.
        pool = aioredis.BlockingConnectionPool(
            connection_class=aioredis.SSLConnection if target.tls else aioredis.Connection,
            max_connections=_CONNECTIONS_PER_TARGET,
            timeout=None,
            host=target.host if target.tls else addresses[0],
            port=target.port,
            db=target.db,
            username=None if login is None else login.user,
            password=None if login is None else login.password,
            socket_connect_timeout=self._connect_timeout,
            retry=Retry(NoBackoff(), 0),
        )
        client = aioredis.Redis.from_pool(pool)  # closing the client closes its pool
        if len(self._clients) >= _MAX_CLIENTS:
            await self._drop(next(iter(self._clients)))
        self._clients[key] = (client, addresses[0])
        return client, addresses[0]

    async def _drop(self, key: _Key) -> None:
        found = self._clients.pop(key, None)
        if found is not None:
            # Closing a broken connection may fail again; it is gone anyway.
            with contextlib.suppress(RedisError, OSError):
                await found[0].aclose()

    async def send(self, requests: Sequence[OutboundRequest]) -> list[AttemptResult]:
        started = time.perf_counter()
        results, admitted = self._gate.admit(requests, started)
        groups: dict[tuple[RedisTarget, BrokerLogin | None], list[int]] = {}
        for i, target in admitted:
            groups.setdefault((target, broker_login(requests[i].headers)), []).append(i)
        await asyncio.gather(
            *(
                self._pipeline(target, login, [requests[i] for i in idx], idx, results, started)
                for (target, login), idx in groups.items()
            )
        )
        return completed(results, started)

    async def _pipeline(
        self,
        target: RedisTarget,
        login: BrokerLogin | None,
        reqs: list[OutboundRequest],
        idx: list[int],
        results: list[AttemptResult | None],
        started: float,
    ) -> None:
        deadline = min(r.deadline_s for r in reqs)
        address: str | None = None
        error: ErrorClass
        try:
            async with asyncio.timeout(deadline):
                client, address = await self._client(target, login)
                async with client.pipeline(transaction=False) as pipe:
                    for req in reqs:
                        fields: dict[Any, Any] = dict(signed_fields(req))
                        fields["body"] = req.body
                        pipe.xadd(target.stream, fields, maxlen=target.maxlen, approximate=True)
                    replies = await pipe.execute(raise_on_error=False)
            for i, reply in zip(idx, replies, strict=True):
                if isinstance(reply, Exception):
                    results[i] = broker_refused(str(reply), started, remote_ip=address)
                else:
                    entry = reply.decode("ascii") if isinstance(reply, bytes) else str(reply)
                    results[i] = broker_ok(entry, started, remote_ip=address)
            return
        except Blocked as exc:
            blocked(exc, target.host, idx, results, started)
            return
        except (TimeoutError, RedisTimeoutError) as exc:
            error, detail = "timeout", f"no confirm from Redis within {deadline:g}s ({type(exc).__name__})"
        except AuthenticationError as exc:
            error, detail = "connect", f"Redis refused the login: {exc}"
        except socket.gaierror as exc:
            error, detail = "dns", f"cannot resolve {target.host}: {exc}"
        except (RedisConnectionError, OSError) as exc:
            error, detail = _connection_error(exc), f"{type(exc).__name__}: {exc}"
        except RedisError as exc:
            error, detail = "protocol", f"{type(exc).__name__}: {exc}"
        # The connection is suspect: reconnect (and re-resolve) for the next batch.
        await self._drop(_key(target, login))
        for i in idx:
            results[i] = failed(error, detail, started, remote_ip=address)

    async def aclose(self) -> None:
        for key in list(self._clients):
            await self._drop(key)
