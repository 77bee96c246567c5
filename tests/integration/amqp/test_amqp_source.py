"""``whk source amqp://…``: a real RabbitMQ queue becomes WHK events, acknowledged only after the commit."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import psycopg
import pytest
from aio_pika.abc import AbstractChannel

from tests.support.rabbitmq import RabbitServer
from tests.support.wait import async_wait_for
from whk.amqp_connect import amqp_connect
from whk.amqp_source import AmqpQueueSource
from whk.amqp_url import parse_amqp_source
from whk.queue_source import SourceStats, run_source

pytestmark = [pytest.mark.db, pytest.mark.slow]

WHK = Path(sys.executable).parent / "whk"
SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}, "sku": {"type": "string"}},
    "required": ["n"],
}


@pytest.fixture
async def admin(rabbitmq_server: RabbitServer) -> AsyncIterator[AbstractChannel]:
    connection = await amqp_connect(rabbitmq_server.url())
    try:
        yield await connection.channel()
    finally:
        await connection.close()


def register(conn: psycopg.Connection[Any], name: str, *, strict: bool = False) -> None:
    conn.execute(
        "SELECT whk.register_event_type(%s, %s::jsonb, 'a test event', strict => %s)",
        [name, json.dumps(SCHEMA), strict],
    )


def events(conn: psycopg.Connection[Any], event_type: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT data, event_key FROM whk.outbox WHERE event_type = %s ORDER BY id", [event_type]
    ).fetchall()


async def new_queue(admin: AbstractChannel) -> str:
    name = f"in-{uuid.uuid4().hex[:10]}"
    await admin.declare_queue(name, durable=True)
    return name


async def publish(admin: AbstractChannel, queue: str, messages: list[aio_pika.Message]) -> None:
    await asyncio.gather(*(admin.default_exchange.publish(m, queue) for m in messages))


async def ready(admin: AbstractChannel, queue: str) -> int:
    """Messages waiting in ``queue`` (not handed to a consumer, or handed back)."""
    declared = await admin.declare_queue(queue, passive=True)
    return int(declared.declaration_result.message_count or 0)


async def consume(aconn: psycopg.AsyncConnection[Any], url: str, n: int, **kw: Any) -> SourceStats:
    source = AmqpQueueSource(parse_amqp_source(url), wait_s=0.05)
    await source.open()
    try:
        return await asyncio.wait_for(run_source(source, aconn, asyncio.Event(), max_messages=n, **kw), 30)
    finally:
        await source.aclose()


async def test_thousand_messages_become_thousand_events(
    conn: psycopg.Connection[Any],
    aconn: psycopg.AsyncConnection[Any],
    rabbitmq_server: RabbitServer,
    admin: AbstractChannel,
) -> None:
    register(conn, "stock.moved", strict=True)
    queue = await new_queue(admin)
    messages = [
        aio_pika.Message(json.dumps({"n": i}).encode(), headers={"key": f"sku{i % 7}"}) for i in range(1000)
    ]
    await publish(admin, queue, messages)
    url = f"amqp://guest:guest@127.0.0.1:{rabbitmq_server.port}/?queue={queue}&prefetch=200"
    stats = await consume(aconn, url, 1000, event_type="stock.moved", batch=200)
    assert (stats.messages, stats.emitted, stats.rejected) == (1000, 1000, 0)
    rows = events(conn, "stock.moved")
    assert sorted(d["n"] for d, _ in rows) == list(range(1000))
    assert {k for _, k in rows} == {f"sku{i}" for i in range(7)}
    # Closed: anything not acknowledged would be back in the queue now.
    assert await ready(admin, queue) == 0
    assert await ready(admin, f"{queue}.dead") == 0


async def test_bad_messages_go_to_the_dead_letter_queue_with_the_reason(
    conn: psycopg.Connection[Any],
    aconn: psycopg.AsyncConnection[Any],
    rabbitmq_server: RabbitServer,
    admin: AbstractChannel,
) -> None:
    register(conn, "price.changed")  # not strict: the source still enforces the contract
    register(conn, "price.strict", strict=True)
    good = ("price.changed", json.dumps({"n": 1, "sku": "A"}))
    bad = {
        "schema": ("price.changed", json.dumps({"sku": "no n"})),
        "strict-schema": ("price.strict", json.dumps({"n": "one"})),
        "not-json": ("price.changed", "{oops"),
        "not-object": ("price.changed", "[1]"),
        "no-type": (None, "{}"),
        "unknown-type": ("price.nobody", "{}"),
        "null-char": ("price.changed", json.dumps({"n": 2, "sku": "\u0000"})),
    }
    queue = await new_queue(admin)
    sent = [good, *bad.values(), good]
    await publish(
        admin,
        queue,
        [
            aio_pika.Message(body.encode(), type=kind, message_id=f"m{i}", headers={"origin": "erp"})
            for i, (kind, body) in enumerate(sent)
        ],
    )
    url = f"amqp://127.0.0.1:{rabbitmq_server.port}/%2F?queue={queue}&dead_letter_queue={queue}.bad"
    stats = await consume(aconn, url, len(sent))
    assert (stats.emitted, stats.rejected) == (2, len(bad))
    assert [d for d, _ in events(conn, "price.changed")] == [{"n": 1, "sku": "A"}] * 2
    assert events(conn, "price.strict") == []
    assert await ready(admin, queue) == 0
    dead_queue = await admin.declare_queue(f"{queue}.bad", passive=True)
    dead = {}
    for _ in bad:
        message = await dead_queue.get(timeout=5)
        await message.ack()
        dead[message.message_id] = message
    assert sorted(dead) == sorted(f"m{i}" for i in range(1, len(sent) - 1))
    reasons = {name: str(dead[f"m{i}"].headers["reason"]) for i, name in enumerate(bad, start=1)}
    assert "n" in reasons["schema"] and reasons["schema"].startswith("contract:")
    assert reasons["strict-schema"].startswith("contract:")
    assert "not JSON" in reasons["not-json"]
    assert "JSON object" in reasons["not-object"]
    assert "no event type" in reasons["no-type"]
    assert "unknown event type" in reasons["unknown-type"]
    assert "SQLSTATE" in reasons["null-char"]  # PostgreSQL refused it: isolated, the rest committed
    first = dead["m1"]  # the message travels with its reason, body, properties and headers
    assert first.body == bad["schema"][1].encode()
    assert first.type == "price.changed"
    assert first.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert first.headers["origin"] == "erp"
    assert first.headers["source-queue"] == queue


def _source(db_url: str, url: str, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    env.update({"WHK_DATABASE_URL": db_url, "WHK_ENV": "development"})
    cmd = [str(WHK), "source", url, "--event-type", "order.placed", "--block-ms", "50", *args]
    return subprocess.Popen(cmd, env=env)


async def test_killed_before_commit_the_messages_are_redelivered(
    db_url: str, conn: psycopg.Connection[Any], rabbitmq_server: RabbitServer, admin: AbstractChannel
) -> None:
    register(conn, "order.placed")
    queue = await new_queue(admin)
    await publish(admin, queue, [aio_pika.Message(json.dumps({"n": i}).encode()) for i in range(50)])
    url = f"amqp://127.0.0.1:{rabbitmq_server.port}/?queue={queue}"
    # Hold the outbox so the source's transaction cannot finish, then kill the source inside it.
    with psycopg.connect(db_url) as blocker:
        blocker.execute("LOCK TABLE whk.outbox IN EXCLUSIVE MODE")
        first = _source(db_url, url)
        try:
            await async_wait_for(
                lambda: conn.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
                    ["%whk.emit%"],
                ).fetchone(),
                30,
                "the source waiting inside its transaction",
            )
            assert await ready(admin, queue) == 0  # all handed to the source, none acknowledged
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait(10)
        blocker.rollback()
    assert events(conn, "order.placed") == []  # nothing committed
    await async_wait_for(lambda: ready(admin, queue), 10, "the messages back in the queue")
    assert await ready(admin, queue) == 50  # the broker requeued every unacknowledged message
    second = _source(db_url, url, "--max-messages", "50")
    assert await asyncio.to_thread(second.wait, 30) == 0
    assert sorted(d["n"] for d, _ in events(conn, "order.placed")) == list(range(50))  # each once
    assert await ready(admin, queue) == 0


def test_redis_source_still_needs_its_group() -> None:
    """``--group`` is optional for amqp:// sources now; a redis:// source without it is refused by name."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    env["WHK_DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/none"
    out = subprocess.run(
        [str(WHK), "source", "redis://127.0.0.1:1/s"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0
    assert "--group is required" in out.stderr, out.stderr
