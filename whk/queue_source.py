"""Queue sources: messages from a broker become WHK events (``whk.emit``) under their registered contract.

``whk source redis://host/stream …`` (``whk_cli/source.py``) composes ``run_source`` with a ``SourceBroker``
(``whk.redis_source.RedisStreamSource``; RabbitMQ implements the same protocol). Other services then get
WHK's fan-out, signing and retries without writing to PostgreSQL themselves.

One batch at a time:

1. ``fetch`` up to ``batch`` messages (a broker hands back its unacknowledged ones first: redelivery);
2. read each message (``read_message``): ``data`` is the event's JSON object, ``type`` its event type (or the
   source's ``--event-type``), ``key`` the optional ordering key;
3. in ONE transaction, check each against its type's contract (``whk.validate_payload``, the router's check)
   and ``whk.emit`` the valid ones; commit;
4. only then ``reject`` the bad ones (a dead-letter stream or queue, with the reason) and ``ack`` the batch.

So no message is acknowledged before its event is committed: a source killed before its commit leaves the
batch unacknowledged and the broker hands it out again. Killed between the commit and the ack, the batch is
emitted again on redelivery (at-least-once, like every delivery WHK makes).

A database error that one message causes (a value PostgreSQL refuses) rolls the batch back; the batch is
then written one message per transaction and only the message that fails again is rejected. A database
that is unreachable stops the batch unacknowledged (it is redelivered).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import psycopg

from whk.sqlfiles import load_queries

__all__ = [
    "MAX_REASON",
    "BatchResult",
    "OpenableSource",
    "SourceBroker",
    "SourceMessage",
    "SourceStats",
    "consume_batch",
    "read_message",
    "run_source",
]

log = logging.getLogger("whk.source")

MAX_REASON: Final = 1000
# SQLSTATE classes one message's data can cause (data exception, integrity, undefined object, program limit).
_DATA_CLASSES: Final = ("22", "23", "42", "54")


class SourceMessage(Protocol):
    """One message as a broker hands it over."""

    @property
    def id(self) -> str:
        """The broker's id (stream entry id, delivery tag), for logs and dead letters."""
        ...

    @property
    def fields(self) -> Mapping[str, bytes]:
        """``data`` (the JSON object), optional ``type`` and ``key``; anything else is ignored."""
        ...


class SourceBroker(Protocol):
    """What ``run_source`` needs from a broker (see the module docstring)."""

    async def fetch(self, limit: int) -> Sequence[SourceMessage]:
        """Up to ``limit`` messages (unacknowledged ones first); waits a little when there are none."""
        ...

    async def reject(self, rejected: Sequence[tuple[SourceMessage, str]]) -> None:
        """Put each message with its reason on the dead-letter stream/queue (durably, before the ack)."""
        ...

    async def ack(self, messages: Sequence[SourceMessage]) -> None:
        """Acknowledge: the broker forgets them."""
        ...


class OpenableSource(SourceBroker, Protocol):
    """A source broker with its connection's life cycle (what ``whk source`` drives)."""

    async def open(self) -> None:
        """Connect (and create the consumer group / declare the queues it needs)."""
        ...

    async def aclose(self) -> None:
        """Close the connection; unacknowledged messages go back to the broker."""
        ...


@dataclass(frozen=True, slots=True)
class _Event:
    message: SourceMessage
    event_type: str
    data: str
    key: str | None


@dataclass(slots=True)
class BatchResult:
    """What one batch did: event ids emitted, messages rejected with their reasons."""

    emitted: list[str] = field(default_factory=list)
    rejected: list[tuple[SourceMessage, str]] = field(default_factory=list)


@dataclass(slots=True)
class SourceStats:
    messages: int = 0
    emitted: int = 0
    rejected: int = 0
    batches: int = 0


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8")


def read_message(message: SourceMessage, event_type: str | None) -> _Event | str:
    """The event a message stands for, or why it cannot be one (the dead-letter reason)."""
    fields = message.fields
    try:
        data_text = _text(fields.get("data"))
        own_type = _text(fields.get("type"))
        key = _text(fields.get("key"))
    except UnicodeDecodeError:
        return "a field is not UTF-8"
    if own_type is not None and event_type is not None and own_type != event_type:
        return f"type {own_type[:200]!r}: this source emits only {event_type!r}"
    chosen = own_type if own_type is not None else event_type
    if not chosen:
        return "no event type: give the message a 'type' field or the source --event-type"
    if data_text is None:
        return "no 'data' field (the event's JSON object)"
    try:
        data = json.loads(data_text)
    except ValueError as exc:
        return f"'data' is not JSON: {exc}"
    if not isinstance(data, dict):
        return f"'data' must be a JSON object, not {type(data).__name__}"
    if key is not None and (not key or len(key) > 1000):
        return "'key' must have 1 to 1000 characters"
    # Re-encoded: PostgreSQL's jsonb refuses what Python's json accepts only in rare cases (NaN, \u0000),
    # and those fail the statement, which isolates this message (module docstring).
    return _Event(message, chosen, json.dumps(data), key)


def _reason(exc: psycopg.Error) -> str:
    diag = exc.diag
    parts = [p for p in (diag.message_primary, diag.message_detail) if p]
    return f"SQLSTATE {exc.sqlstate}: " + (" - ".join(parts) or str(exc))


def _is_data_error(exc: BaseException) -> bool:
    state = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, psycopg.Error) and state[:2] in _DATA_CLASSES


async def _emit_all(
    conn: psycopg.AsyncConnection[Any], query: str, events: Sequence[_Event], result: BatchResult
) -> None:
    params = [{"type": e.event_type, "data": e.data, "key": e.key} for e in events]
    async with conn.transaction(), conn.cursor() as cur:
        await cur.executemany(query, params, returning=True)
        rows: list[tuple[str | None, str | None]] = []
        while True:
            row = await cur.fetchone()
            rows.append((row[0], row[1]) if row is not None else (None, None))
            if not cur.nextset():
                break
    for event, (problem, event_id) in zip(events, rows, strict=True):
        if problem is not None:
            result.rejected.append((event.message, f"contract: {problem}"[:MAX_REASON]))
        elif event_id is not None:
            result.emitted.append(str(event_id))


async def consume_batch(
    broker: SourceBroker, conn: psycopg.AsyncConnection[Any], *, event_type: str | None, limit: int
) -> tuple[int, BatchResult]:
    """Fetch, emit and commit, then reject and ack one batch; returns (messages fetched, what happened)."""
    messages = list(await broker.fetch(limit))
    result = BatchResult()
    if not messages:
        return 0, result
    events: list[_Event] = []
    for message in messages:
        read = read_message(message, event_type)
        if isinstance(read, str):
            result.rejected.append((message, read[:MAX_REASON]))
        else:
            events.append(read)
    if events:
        query = load_queries("whk", "queue_source.sql")["emit_checked"]
        try:
            await _emit_all(conn, query, events, result)
        except psycopg.Error as exc:
            if not _is_data_error(exc):
                raise  # unreachable database and the like: nothing is acked, the batch comes back
            # The transaction rolled back before anything was counted: write the messages one by one.
            log.warning("a batch failed (%s); writing its messages one by one", _reason(exc))
            for event in events:
                try:
                    await _emit_all(conn, query, [event], result)
                except psycopg.Error as one:
                    if not _is_data_error(one):
                        raise
                    result.rejected.append((event.message, _reason(one)[:MAX_REASON]))
    # Committed: now (and only now) the broker may forget these messages.
    if result.rejected:
        await broker.reject(result.rejected)
    await broker.ack(messages)
    return len(messages), result


async def run_source(
    broker: SourceBroker,
    conn: psycopg.AsyncConnection[Any],
    stop: asyncio.Event,
    *,
    event_type: str | None = None,
    batch: int = 100,
    max_messages: int | None = None,
) -> SourceStats:
    """Consume until ``stop`` is set (or ``max_messages`` were handled); ``conn`` must be autocommit."""
    stats = SourceStats()
    while not stop.is_set() and (max_messages is None or stats.messages < max_messages):
        count, result = await consume_batch(broker, conn, event_type=event_type, limit=batch)
        if count:
            stats.batches += 1
            stats.messages += count
            stats.emitted += len(result.emitted)
            stats.rejected += len(result.rejected)
            for message, reason in result.rejected:
                log.warning("message %s rejected to the dead letters: %s", message.id, reason)
    return stats
