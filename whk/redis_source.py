"""A Redis stream as a WHK event source (``whk.queue_source.SourceBroker``), through a consumer group.

* ``open`` creates the group when missing (``XGROUP CREATE … $ MKSTREAM``: a new group starts with the
  messages that arrive from now on; ``start_id="0"`` takes the stream's whole history).
* ``fetch`` hands out, in this order: this consumer's own pending entries (a restart re-reads what it had
  fetched but not acknowledged), entries other consumers left pending longer than ``claim_idle_ms``
  (``XAUTOCLAIM``: a consumer that died is taken over; checked at most every ``claim_idle_ms / 2``), then new
  ones (``XREADGROUP … >``, blocking up to ``block_ms``).
* ``reject`` appends each bad message to the dead-letter stream (``<stream>:dead`` by default) with its
  fields plus ``reason``, ``source-stream`` and ``source-id``, capped like the source stream
  (``MAXLEN ~``), in one pipeline — before the batch is acknowledged.
* ``ack`` is ``XACK`` of the whole batch. Entries deleted while pending (trimmed) are acknowledged without
  an event: there is nothing left to emit.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from whk.queue_source import SourceMessage
from whk.queue_targets import RedisTarget

__all__ = ["RedisMessage", "RedisStreamSource"]

_DEAD_FIELDS: Final = ("reason", "source-stream", "source-id")


@dataclass(frozen=True, slots=True)
class RedisMessage:
    """One stream entry (``fields`` empty when it was deleted while pending)."""

    id: str
    fields: Mapping[str, bytes]


def _message(entry_id: bytes | str, fields: Mapping[bytes, bytes] | None) -> RedisMessage:
    ident = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    decoded = {k.decode("utf-8", "replace"): v for k, v in (fields or {}).items()}
    return RedisMessage(ident, decoded)


class RedisStreamSource:
    """Consumes ``target.stream`` as ``consumer`` of ``group`` (see the module docstring)."""

    def __init__(
        self,
        target: RedisTarget,
        *,
        group: str,
        consumer: str,
        dead_stream: str | None = None,
        block_ms: int = 1000,
        claim_idle_ms: int = 60_000,
        start_id: str = "$",
    ) -> None:
        self.target = target
        self.group = group
        self.consumer = consumer
        self.dead_stream = dead_stream or f"{target.stream}:dead"
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._start_id = start_id
        self._own_pending = True
        self._next_claim = 0.0
        login = target.login
        self._client = aioredis.Redis(
            host=target.host,
            port=target.port,
            db=target.db,
            username=None if login is None else login.user,
            password=None if login is None else login.password,
            ssl=target.tls,
            socket_connect_timeout=10,
            decode_responses=False,
        )

    async def open(self) -> None:
        try:
            await self._client.xgroup_create(self.target.stream, self.group, id=self._start_id, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(self, limit: int) -> Sequence[SourceMessage]:
        stream = self.target.stream
        if self._own_pending:
            got = await self._client.xreadgroup(self.group, self.consumer, {stream: "0"}, count=limit)
            entries = got[0][1] if got else []
            if entries:
                return [_message(i, f) for i, f in entries]
            self._own_pending = False  # drained: from now on, only new entries and other consumers' leftovers
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + self._claim_idle_ms / 2000.0
            claimed = await self._client.xautoclaim(
                stream, self.group, self.consumer, self._claim_idle_ms, start_id="0-0", count=limit
            )
            # [next start, entries, deleted ids] (Redis 7): deleted ones have nothing left to emit.
            entries = [e for e in claimed[1] if e[1] is not None]
            deleted = [_message(i, None) for i in (claimed[2] if len(claimed) > 2 else [])]
            if entries or deleted:
                if claimed[0] not in (b"0-0", "0-0"):
                    self._next_claim = 0.0  # more to take over: look again at once
                return [_message(i, f) for i, f in entries] + deleted
        got = await self._client.xreadgroup(
            self.group, self.consumer, {stream: ">"}, count=limit, block=self._block_ms
        )
        entries = got[0][1] if got else []
        return [_message(i, f) for i, f in entries]

    async def reject(self, rejected: Sequence[tuple[SourceMessage, str]]) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for message, reason in rejected:
                fields: dict[Any, Any] = {k: v for k, v in message.fields.items() if k not in _DEAD_FIELDS}
                fields.update(
                    {"reason": reason, "source-stream": self.target.stream, "source-id": message.id}
                )
                pipe.xadd(self.dead_stream, fields, maxlen=self.target.maxlen, approximate=True)
            await pipe.execute()

    async def ack(self, messages: Sequence[SourceMessage]) -> None:
        if messages:
            await self._client.xack(self.target.stream, self.group, *[m.id for m in messages])
