"""``whk source redis://…``: a real redis-server's stream becomes WHK events, acknowledged after commit."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.brokers import RedisServer, redis_server
from tests.support.wait import wait_for
from whk.queue_source import run_source
from whk.queue_targets import parse_redis_url
from whk.redis_source import RedisStreamSource

pytestmark = [pytest.mark.db]

WHK = Path(sys.executable).parent / "whk"
SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}, "sku": {"type": "string"}},
    "required": ["n"],
}


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def register(conn: psycopg.Connection[Any], name: str, *, strict: bool = False) -> None:
    conn.execute(
        "SELECT whk.register_event_type(%s, %s::jsonb, 'a test event', strict => %s)",
        [name, json.dumps(SCHEMA), strict],
    )


def add(server: RedisServer, stream: str, messages: list[dict[str, str]]) -> list[str]:
    with server.client() as c, c.pipeline(transaction=False) as pipe:
        for fields in messages:
            pipe.xadd(stream, fields)  # type: ignore[arg-type]
        return [i.decode() for i in pipe.execute()]


def pending(server: RedisServer, stream: str, group: str) -> int:
    with server.client() as c:
        return int(c.xpending(stream, group)["pending"])


def events(conn: psycopg.Connection[Any], event_type: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT data, event_key FROM whk.outbox WHERE event_type = %s ORDER BY id", [event_type]
    ).fetchall()


async def consume(
    server: RedisServer, aconn: psycopg.AsyncConnection[Any], stream: str, n: int, **kw: Any
) -> Any:
    source = RedisStreamSource(
        parse_redis_url(server.url(stream)), group="g", consumer="c1", block_ms=50, start_id="0"
    )
    await source.open()
    try:
        return await asyncio.wait_for(
            run_source(source, aconn, asyncio.Event(), batch=200, max_messages=n, **kw), 30
        )
    finally:
        await source.aclose()


async def test_thousand_messages_become_thousand_events(conn, aconn, redis):
    register(conn, "stock.moved", strict=True)
    add(redis, "stock", [{"data": json.dumps({"n": i}), "key": f"sku{i % 7}"} for i in range(1000)])
    stats = await consume(redis, aconn, "stock", 1000, event_type="stock.moved")
    assert (stats.messages, stats.emitted, stats.rejected) == (1000, 1000, 0)
    rows = events(conn, "stock.moved")
    assert sorted(d["n"] for d, _ in rows) == list(range(1000))
    assert {k for _, k in rows} == {f"sku{i}" for i in range(7)}
    assert pending(redis, "stock", "g") == 0
    with redis.client() as c:
        assert c.xlen("stock:dead") == 0


async def test_bad_messages_go_to_the_dead_letter_stream_with_the_reason(conn, aconn, redis):
    register(conn, "price.changed")  # not strict: the source still enforces the contract
    register(conn, "price.strict", strict=True)
    good = {"type": "price.changed", "data": json.dumps({"n": 1, "sku": "A"})}
    bad = {
        "schema": {"type": "price.changed", "data": json.dumps({"sku": "no n"})},
        "strict-schema": {"type": "price.strict", "data": json.dumps({"n": "one"})},
        "not-json": {"type": "price.changed", "data": "{oops"},
        "not-object": {"type": "price.changed", "data": "[1]"},
        "no-data": {"type": "price.changed"},
        "no-type": {"data": "{}"},
        "unknown-type": {"type": "price.nobody", "data": "{}"},
        "null-char": {"type": "price.changed", "data": json.dumps({"n": 2, "sku": "\u0000"})},
    }
    ids = add(redis, "prices", [good, *bad.values(), good])
    stats = await consume(redis, aconn, "prices", len(ids))
    assert (stats.emitted, stats.rejected) == (2, len(bad))
    assert [d for d, _ in events(conn, "price.changed")] == [{"n": 1, "sku": "A"}] * 2
    assert events(conn, "price.strict") == []
    with redis.client() as c:
        dead = {f[b"source-id"].decode(): f for _, f in c.xrange("prices:dead")}
    assert sorted(dead) == sorted(ids[1:-1])
    reasons = {name: dead[i][b"reason"].decode() for name, i in zip(bad, ids[1:-1], strict=True)}
    assert "n" in reasons["schema"] and reasons["schema"].startswith("contract:")
    assert reasons["strict-schema"].startswith("contract:")
    assert "not JSON" in reasons["not-json"]
    assert "JSON object" in reasons["not-object"]
    assert "no 'data'" in reasons["no-data"]
    assert "no event type" in reasons["no-type"]
    assert "unknown event type" in reasons["unknown-type"]
    assert "SQLSTATE" in reasons["null-char"]  # PostgreSQL refused it: isolated, the rest committed
    assert dead[ids[1]][b"data"] == bad["schema"]["data"].encode()  # the message travels with its reason
    assert pending(redis, "prices", "g") == 0


def _source(db_url: str, server: RedisServer, consumer: str, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    env.update({"WHK_DATABASE_URL": db_url, "WHK_ENV": "development"})
    cmd = [str(WHK), "source", server.url("orders"), "--group", "g", "--event-type", "order.placed"]
    cmd += ["--consumer", consumer, "--from-start", "--block-ms", "50", *args]
    return subprocess.Popen(cmd, env=env)


@pytest.mark.slow  # two `whk source` processes
def test_killed_before_commit_the_batch_is_redelivered(db_url, conn, redis):
    register(conn, "order.placed")
    add(redis, "orders", [{"data": json.dumps({"n": i})} for i in range(50)])
    # Hold the outbox so the source's transaction cannot finish, then kill the source inside it.
    with psycopg.connect(db_url) as blocker:
        blocker.execute("LOCK TABLE whk.outbox IN EXCLUSIVE MODE")
        first = _source(db_url, redis, "first")
        try:
            wait_for(
                lambda: conn.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
                    ["%whk.emit%"],
                ).fetchone(),
                20,
                "the source waiting inside its transaction",
            )
            assert pending(redis, "orders", "g") == 50  # fetched, not acknowledged
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            if first.poll() is None:
                first.kill()
        blocker.rollback()
    assert events(conn, "order.placed") == []  # nothing committed
    # Another consumer takes the dead one's pending entries over (XAUTOCLAIM) and commits them once.
    second = _source(db_url, redis, "second", "--claim-idle-ms", "100", "--max-messages", "50")
    assert second.wait(30) == 0
    assert sorted(d["n"] for d, _ in events(conn, "order.placed")) == list(range(50))
    assert pending(redis, "orders", "g") == 0
