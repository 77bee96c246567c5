"""Redis stream targets end to end: the dispatcher in-process, real PostgreSQL, a real ``redis-server``.

Every message is checked with the `standardwebhooks` package from its stream fields, as a consumer would.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import port_for
import psycopg
import pytest
from standardwebhooks.webhooks import Webhook

from dispatcher.attempt import OutboundRequest
from dispatcher.redis_target import RedisTransport
from tests.support.brokers import RedisServer, redis_server
from tests.support.delivery import TEST_SECRET, emit, make_consumer, make_webhook, statuses
from tests.support.dispatch import compress_schedule, fast_settings, running
from tests.support.receiver import wait_until

pytestmark = [pytest.mark.db]


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def entries(server: RedisServer, stream: str) -> list[dict[str, bytes]]:
    with server.client() as c:
        return [{k.decode(): v for k, v in fields.items()} for _, fields in c.xrange(stream)]


def verified(fields: dict[str, bytes]) -> dict[str, Any]:
    """What a consumer does: verify the signature from the fields, then read the envelope."""
    headers = {
        name: fields[name].decode() for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    }
    assert fields["content-type"] == b"application/json"
    payload: dict[str, Any] = Webhook(TEST_SECRET).verify(fields["body"], headers)
    return payload


def attempts(conn: psycopg.Connection[Any], hook: int) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT outcome, response_status, error_class, error_detail, request_headers::text "
        "FROM whk.whk_03_entregas_tentativas WHERE webhook_id = %s ORDER BY id",
        [hook],
    ).fetchall()


@pytest.mark.slow  # 1,000 events, and an ordered webhook's lanes
async def test_thousand_events_arrive_once_signed_and_ordered_per_key(db_url, conn, redis):
    consumer = make_consumer(conn)
    hook = make_webhook(conn, consumer, redis.url("orders", maxlen=5000), ["order.*"])
    ordered = make_webhook(conn, consumer, redis.url("lanes"), ["lane.*"], delivery_mode="ordered")
    ids = {"msg_" + i.replace("-", "") for i in emit(conn, "order.changed", count=1000)}
    for k in range(10):
        emit(conn, "lane.moved", {"key": f"k{k}"}, key=f"k{k}", count=20)
    async with running(fast_settings(db_url)):
        assert await wait_until(lambda: statuses(conn, hook) == {"delivered": 1000}, 60)
        assert await wait_until(lambda: statuses(conn, ordered) == {"delivered": 200}, 60)
    got = entries(redis, "orders")
    assert len(got) == 1000  # each exactly once
    assert {f["webhook-id"].decode() for f in got} == ids
    assert sorted(verified(f)["data"]["seq"] for f in got) == list(range(1000))
    seen: dict[str, list[int]] = defaultdict(list)
    for fields in entries(redis, "lanes"):
        data = verified(fields)["data"]
        seen[data["key"]].append(data["seq"])
    assert seen == {f"k{k}": list(range(20)) for k in range(10)}  # in order per key
    # The attempt log reads like HTTP's: the broker's confirm is a 200 whose body is the entry id.
    outcome, status, error, _, _ = attempts(conn, hook)[0]
    assert (outcome, status, error) == ("delivered", 200, None)
    body = conn.execute(
        "SELECT response_body FROM whk.whk_03_entregas_tentativas WHERE webhook_id = %s LIMIT 1", [hook]
    ).fetchone()
    assert body is not None and body[0].encode() in {e.encode() for e in stream_ids(redis, "orders")}


def stream_ids(server: RedisServer, stream: str) -> list[str]:
    with server.client() as c:
        return [entry_id.decode() for entry_id, _ in c.xrange(stream)]


async def test_broker_login_is_the_encrypted_basic_credential(db_url, conn, redis):
    with redis.client() as c:
        c.execute_command("ACL", "SETUSER", "whk", "on", ">s3cret-pw", "~*", "+@all")
    consumer = make_consumer(conn)
    good = make_webhook(
        conn, consumer, redis.url("with-login"), ["*"], auth_type="basic", auth_credential="whk:s3cret-pw"
    )
    bad = make_webhook(
        conn, consumer, redis.url("wrong-login"), ["*"], auth_type="basic", auth_credential="whk:nope"
    )
    compress_schedule(conn, [30.0])
    emit(conn, "order.created", {"n": 1})
    async with running(fast_settings(db_url)):
        assert await wait_until(lambda: statuses(conn, good) == {"delivered": 1}, 10)
        assert await wait_until(lambda: len(attempts(conn, bad)) == 1, 10)
    (fields,) = entries(redis, "with-login")
    assert verified(fields)["data"] == {"n": 1, "seq": 0}
    assert set(fields) == {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "body"}
    assert entries(redis, "wrong-login") == []
    ((outcome, status, error, detail, _),) = attempts(conn, bad)
    assert (outcome, status, error) == ("retry", None, "connect")
    assert "login" in detail
    stored = conn.execute(
        "SELECT url, auth_credential_enc FROM whk.whk_01_webhooks WHERE id = %s", [good]
    ).fetchone()
    assert stored is not None and b"s3cret-pw" not in bytes(stored[1])
    for row in attempts(conn, good) + attempts(conn, bad):
        assert "s3cret-pw" not in json.dumps([str(v) for v in row])


async def test_unreachable_broker_opens_the_breaker(db_url, conn):
    compress_schedule(conn, [0.05] * 20)
    nobody = port_for.select_random()
    hook = make_webhook(
        conn,
        make_consumer(conn),
        f"redis://127.0.0.1:{nobody}/lost",
        ["*"],
        breaker_config={"failure_threshold": 3, "open_s": 60},
        max_in_flight=1,
    )
    emit(conn, "order.created", count=5)
    async with running(fast_settings(db_url)):
        assert await wait_until(
            lambda: (
                conn.execute(
                    "SELECT breaker_state FROM whk.webhook_runtime WHERE webhook_id = %s", [hook]
                ).fetchone()
                == ("open",)
            ),
            10,
        )
    tried = attempts(conn, hook)
    assert len(tried) == 3  # nothing more while the breaker is open
    assert {(o, s, e) for o, s, e, _, _ in tried} == {("retry", None, "refused")}
    assert statuses(conn, hook) == {"pending": 5}


def _one(url: str) -> OutboundRequest:
    return OutboundRequest(
        method="POST", url=url, headers=[("webhook-id", "msg_1")], body=b"{}", deadline_s=2.0
    )


async def _send_one(transport: RedisTransport, url: str) -> Any:
    try:
        (result,) = await transport.send([_one(url)])
    finally:
        await transport.aclose()
    return result


async def test_ssrf_policy_applies_to_broker_hosts(db_url, redis):
    strict = fast_settings(db_url, WHK_ALLOW_PRIVATE_CIDRS="")
    result = await _send_one(RedisTransport(strict), redis.url("never"))  # a literal loopback address
    assert result.error_class == "ssrf_blocked"
    assert "loopback" in result.error_detail

    async def rebinding(host: str, port: int) -> list[str]:  # a public answer next to a private one
        return ["93.184.216.34", "127.0.0.1"]

    result = await _send_one(
        RedisTransport(strict, resolver=rebinding), f"redis://cache.example.com:{redis.port}/never"
    )
    assert result.error_class == "ssrf_blocked"
    assert "127.0.0.1 (resolved from cache.example.com)" in result.error_detail
    assert entries(redis, "never") == []


async def test_a_broker_name_is_resolved_once_and_the_checked_address_dialled(db_url, redis):
    asked: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]  # the real DNS does not know this name: only the checked address can work

    transport = RedisTransport(fast_settings(db_url), resolver=resolver)
    url = f"redis://queue.whk-test.invalid:{redis.port}/named"
    try:
        first, second = await transport.send([_one(url), _one(url)])
        (third,) = await transport.send([_one(url)])
    finally:
        await transport.aclose()
    assert [r.status for r in (first, second, third)] == [200, 200, 200]
    assert first.remote_ip == "127.0.0.1"
    assert asked == ["queue.whk-test.invalid"]  # once per connection, not per batch
    assert len(entries(redis, "named")) == 3


async def test_concurrent_batches_wait_for_a_connection_instead_of_failing(db_url, redis):
    # More batches at once than connections per target: they queue for a connection (within their
    # deadline); a pool that raised "Too many connections" would fail them and feed the breaker.
    transport = RedisTransport(fast_settings(db_url))
    reqs = [
        OutboundRequest(
            method="POST",
            url=redis.url("crowd"),
            headers=[("webhook-id", f"msg_{i}")],
            body=b"{}",
            deadline_s=5.0,
        )
        for i in range(40)
    ]
    with redis.client() as c:
        c.execute_command("CLIENT", "PAUSE", "300", "WRITE")  # every XADD waits: connections stay busy
    try:
        results = await asyncio.gather(*(transport.send([r]) for r in reqs))
    finally:
        await transport.aclose()
    assert [(r.status, r.error_class) for (r,) in results] == [(200, None)] * 40
    assert len(entries(redis, "crowd")) == 40


@pytest.mark.slow  # kills and restarts redis-server while 1,000 events flow
async def test_broker_restart_mid_stream_loses_nothing(db_url, conn):
    compress_schedule(conn, [0.2] * 30, floor=0.2)
    with redis_server(durable=True) as server:
        hook = make_webhook(
            conn,
            make_consumer(conn),
            server.url("restarted"),
            ["*"],
            rate_limit_per_second=500,
            rate_limit_burst=50,
            # The breaker opens while the broker is down; short periods let it close soon after.
            breaker_config={"failure_threshold": 5, "open_s": 0.5, "open_max_s": 1},
        )
        ids = {"msg_" + i.replace("-", "") for i in emit(conn, "order.created", count=1000)}

        def stream_length() -> int:
            with server.client() as c:
                return int(c.xlen("restarted"))

        async with running(fast_settings(db_url)):
            assert await wait_until(lambda: stream_length() >= 150, 20)
            server.kill()
            assert await wait_until(
                lambda: any(e is not None for _, _, e, _, _ in attempts(conn, hook)), 10
            ), (stream_length, statuses(conn, hook), attempts(conn, hook)[-3:])
            server.start()
            assert await wait_until(lambda: statuses(conn, hook) == {"delivered": 1000}, 60)
        got = entries(server, "restarted")
    # At-least-once: an XADD whose confirm was lost is sent again; deduplicated by webhook-id, complete.
    delivered = [f["webhook-id"].decode() for f in got]
    assert set(delivered) == ids
    assert len(delivered) >= 1000
    for fields in got[:50]:
        verified(fields)
