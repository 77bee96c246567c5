"""RabbitMQ exchanges as delivery targets: the dispatcher in-process, a real broker, real PostgreSQL.

Consumers verify the messages with the ``standardwebhooks`` package, as an HTTP receiver would.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import port_for
import psycopg
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from standardwebhooks.webhooks import Webhook

from tests.support.delivery import TEST_SECRET, emit, make_consumer, make_webhook, statuses
from tests.support.dispatch import compress_schedule, fast_settings, running
from tests.support.rabbitmq import RabbitServer
from tests.support.wait import async_wait_for
from whk.amqp_connect import amqp_connect

pytestmark = [pytest.mark.db, pytest.mark.slow]


class Inbox:
    """Messages a consumer received, by arrival. Acknowledged once kept: with auto-ack, what the broker had
    sent when it went down would be gone from the queue without reaching the test (an at-least-once
    consumer acknowledges after processing)."""

    def __init__(self) -> None:
        self.messages: list[AbstractIncomingMessage] = []

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        self.messages.append(message)
        with contextlib.suppress(aio_pika.exceptions.AMQPError, RuntimeError, ConnectionError):
            await message.ack()  # lost with the connection: the broker delivers it again (a duplicate)

    def ids(self) -> list[str]:
        return [str(m.headers["webhook-id"]) for m in self.messages]


async def _consume(url: str, queue_name: str, inbox: Inbox) -> AbstractConnection:
    connection = await amqp_connect(url)
    channel = await connection.channel()
    queue = await channel.get_queue(queue_name, ensure=True)
    await queue.consume(inbox.on_message, no_ack=False)
    return connection


async def _topology(channel: AbstractChannel, *, durable: bool) -> str:
    """A topic exchange ``t-…`` with a queue ``t-….q`` bound to every routing key."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    exchange = await channel.declare_exchange(
        name, aio_pika.ExchangeType.TOPIC, durable=durable, auto_delete=not durable
    )
    queue = await channel.declare_queue(f"{name}.q", durable=durable, auto_delete=not durable)
    await queue.bind(exchange, "#")
    return name


@pytest.fixture
async def admin(rabbitmq_server: RabbitServer) -> AsyncIterator[AbstractChannel]:
    connection = await amqp_connect(rabbitmq_server.url())
    try:
        yield await connection.channel()
    finally:
        await connection.close()


def _amqp_hook(conn: psycopg.Connection[Any], url: str, **cols: Any) -> int:
    return make_webhook(
        conn, make_consumer(conn), url, ["*"], auth_type="basic", auth_credential="guest:guest", **cols
    )


def _attempts(conn: psycopg.Connection[Any], hook: int) -> dict[str | None, int]:
    rows = conn.execute(
        "SELECT error_class, count(*) FROM whk.whk_03_entregas_tentativas WHERE webhook_id = %s "
        "GROUP BY error_class",
        [hook],
    ).fetchall()
    return {r[0]: int(r[1]) for r in rows}


async def test_thousand_events_arrive_once_signed_and_routed_by_type(
    db_url: str, conn: psycopg.Connection[Any], rabbitmq_server: RabbitServer, admin: AbstractChannel
) -> None:
    exchange = await _topology(admin, durable=False)
    hook = _amqp_hook(conn, f"amqp://127.0.0.1:{rabbitmq_server.port}/?exchange={exchange}")
    emitted = emit(conn, "order.created", count=500) + emit(conn, "invoice.paid", count=500)
    inbox = Inbox()
    consumer = await _consume(rabbitmq_server.url(), f"{exchange}.q", inbox)
    try:
        async with running(fast_settings(db_url)):
            await async_wait_for(lambda: statuses(conn, hook) == {"delivered": 1000}, 60, "1,000 delivered")
            await async_wait_for(lambda: len(inbox.messages) >= 1000, 10, "1,000 messages consumed")
    finally:
        await consumer.close()
    ids = inbox.ids()
    assert len(ids) == len(set(ids)) == 1000  # each arrived once
    assert set(ids) == {f"msg_{e.replace('-', '')}" for e in emitted}
    for m in inbox.messages:
        envelope = Webhook(TEST_SECRET).verify(m.body, {k: str(v) for k, v in m.headers.items()})
        assert m.routing_key == m.type == envelope["type"]
        assert m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert m.message_id == m.headers["webhook-id"]
    assert _attempts(conn, hook) == {None: 1000}


async def test_ordered_webhook_keeps_order_per_key(
    db_url: str, conn: psycopg.Connection[Any], rabbitmq_server: RabbitServer, admin: AbstractChannel
) -> None:
    exchange = await _topology(admin, durable=False)
    hook = _amqp_hook(
        conn, f"amqp://127.0.0.1:{rabbitmq_server.port}/?exchange={exchange}", delivery_mode="ordered"
    )
    for k in range(10):
        emit(conn, "order.updated", {"k": k}, key=f"K{k}", count=20)
    inbox = Inbox()
    consumer = await _consume(rabbitmq_server.url(), f"{exchange}.q", inbox)
    try:
        async with running(fast_settings(db_url)):
            await async_wait_for(lambda: statuses(conn, hook) == {"delivered": 200}, 60, "200 delivered")
            await async_wait_for(lambda: len(inbox.messages) >= 200, 10, "200 messages consumed")
    finally:
        await consumer.close()
    per_key: dict[int, list[int]] = {}
    for m in inbox.messages:
        data = Webhook(TEST_SECRET).verify(m.body, {k: str(v) for k, v in m.headers.items()})["data"]
        per_key.setdefault(data["k"], []).append(data["seq"])
    assert per_key == {k: list(range(20)) for k in range(10)}  # commit order within each key


async def test_broker_restart_mid_stream_loses_nothing(
    db_url: str, conn: psycopg.Connection[Any], rabbitmq_server: RabbitServer, admin: AbstractChannel
) -> None:
    compress_schedule(conn, [0.2] * 30)
    exchange = await _topology(admin, durable=True)
    hook = _amqp_hook(
        conn,
        f"amqp://127.0.0.1:{rabbitmq_server.port}/?exchange={exchange}",
        # Every attempt while the broker is down fails: keep the breaker's open periods short.
        breaker_config={"failure_threshold": 1000, "open_s": 0.2, "open_max_s": 0.5},
    )
    emitted = set(emit(conn, "order.created", count=300))
    inbox = Inbox()
    consumer = await _consume(rabbitmq_server.url(), f"{exchange}.q", inbox)
    try:
        async with running(fast_settings(db_url)):
            await async_wait_for(lambda: len(inbox.messages) >= 50, 30, "the first messages")
            # Stop the broker under load (the event loop keeps running: the dispatcher sees it go).
            await asyncio.to_thread(rabbitmq_server.stop_server)
            await consumer.close()
            # However fast the first 300 went, these meet a broker that is down.
            emitted |= set(emit(conn, "order.created", count=100))
            await async_wait_for(lambda: _attempts(conn, hook).keys() - {None}, 30, "a failed attempt")
            await asyncio.to_thread(rabbitmq_server.start)
            consumer = await _consume(rabbitmq_server.url(), f"{exchange}.q", inbox)
            await async_wait_for(lambda: statuses(conn, hook) == {"delivered": 400}, 90, "400 delivered")
            want = {f"msg_{e.replace('-', '')}" for e in emitted}
            await async_wait_for(lambda: set(inbox.ids()) >= want, 30, "every event consumed")
    finally:
        await consumer.close()
        # The admin channel went down with the broker: clean up on a new connection.
        async with await amqp_connect(rabbitmq_server.url()) as cleanup:
            channel = await cleanup.channel()
            await channel.queue_delete(f"{exchange}.q")
            await channel.exchange_delete(exchange)
    ids = inbox.ids()
    assert set(ids) == want  # nothing lost; duplicates (a lost confirm) are at-least-once
    for m in inbox.messages:
        Webhook(TEST_SECRET).verify(m.body, {k: str(v) for k, v in m.headers.items()})
    failures = _attempts(conn, hook).keys() - {None}
    assert failures <= {"refused", "reset", "connect", "timeout"}, failures


async def test_unreachable_broker_opens_the_breaker(db_url: str, conn: psycopg.Connection[Any]) -> None:
    compress_schedule(conn, [0.05] * 20)
    hook = _amqp_hook(
        conn,
        f"amqp://127.0.0.1:{port_for.select_random()}/?exchange=orders",
        breaker_config={"failure_threshold": 3, "open_s": 60},
        max_in_flight=1,
    )
    emit(conn, "order.created", count=5)
    async with running(fast_settings(db_url)):
        await async_wait_for(
            lambda: (
                conn.execute(
                    "SELECT breaker_state FROM whk.webhook_runtime WHERE webhook_id = %s", [hook]
                ).fetchone()
                == ("open",)
            ),
            20,
            "the breaker to open",
        )
    assert _attempts(conn, hook) == {"refused": 3}  # open: nothing more is tried
    assert statuses(conn, hook) == {"pending": 5}


async def test_unroutable_message_is_retried_then_dead_lettered(
    db_url: str, conn: psycopg.Connection[Any], rabbitmq_server: RabbitServer, admin: AbstractChannel
) -> None:
    compress_schedule(conn, [0.05, 0.05])
    exchange = f"t-{uuid.uuid4().hex[:10]}"
    await admin.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, auto_delete=False)
    hook = _amqp_hook(conn, f"amqp://127.0.0.1:{rabbitmq_server.port}/?exchange={exchange}")
    emit(conn, "order.created")  # no queue is bound: the broker returns the message (mandatory)
    try:
        async with running(fast_settings(db_url)):
            await async_wait_for(lambda: statuses(conn, hook) == {"dead": 1}, 20, "a dead letter")
    finally:
        await admin.exchange_delete(exchange)
    rows = conn.execute(
        "SELECT response_status, error_detail FROM whk.whk_03_entregas_tentativas WHERE webhook_id = %s",
        [hook],
    ).fetchall()
    assert len(rows) == 3
    assert all(status == 500 and "unroutable" in detail for status, detail in rows), rows
    dead = conn.execute(
        "SELECT dead_reason FROM whk.whk_03_entregas WHERE webhook_id = %s", [hook]
    ).fetchone()
    assert dead is not None and dead[0], dead
