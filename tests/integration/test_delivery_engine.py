"""The dispatcher engine in-process against real PostgreSQL and real receivers on 127.0.0.1.

Covers the request (Standard Webhooks signatures verified with the `standardwebhooks` package, custom
headers, outbound auth, masking in the attempt log), outcomes and retries with a compressed schedule,
dead letters, acks, ordered lanes, batches, delayed delivery, the breaker and the rate limit.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from tests.support.delivery import TEST_SECRET, add_secret, emit, make_consumer, make_webhook, statuses
from tests.support.dispatch import compress_schedule, fast_settings, running
from tests.support.receiver import Reply, receiver, wait_until

pytestmark = [pytest.mark.db]
__all__ = ["receiver"]  # the fixture, imported


def verify(secret: str, req) -> dict:  # type: ignore[no-untyped-def]
    return Webhook(secret).verify(req.body, req.headers)


async def test_signed_request_with_headers_auth_and_masked_log(db_url, conn, receiver):
    c = make_consumer(conn)
    hook = make_webhook(
        conn,
        c,
        receiver.url("/signed"),
        ["order.*"],
        headers={"X-Tenant": "acme", "Content-Length": "1", "X-Api-Token": "t0ps3cret"},
        auth_type="bearer",
        auth_credential="bearer-credential",
    )
    old = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="
    add_secret(conn, hook, old, expires_at=datetime.now(UTC) + timedelta(hours=1))
    add_secret(
        conn, hook, "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3", expires_at=datetime.now(UTC) - timedelta(1)
    )
    (event_id,) = emit(conn, "order.created", {"total": 10})
    async with running(fast_settings(db_url)):
        assert await wait_until(lambda: statuses(conn, hook) == {"delivered": 1}, 10)
    (req,) = receiver.to("/signed")
    # One signature per valid secret (current + the old one in its grace period), none for the expired.
    assert len(req.headers["webhook-signature"].split(" ")) == 2
    payload = verify(TEST_SECRET, req)
    verify(old, req)
    assert payload["data"] == {"total": 10, "seq": 0}
    assert req.headers["webhook-id"] == f"msg_{event_id.replace('-', '')}"
    assert req.headers["Authorization"] == "Bearer bearer-credential"
    assert req.headers["X-Tenant"] == "acme"
    assert req.headers["Content-Length"] == str(len(req.body))
    assert req.headers["User-Agent"].startswith("WHK-Webhooks/")
    logged = conn.execute(
        "SELECT request_headers, response_status, outcome, attempt_no, dispatcher_id, request_body_sha256 "
        "FROM whk.whk_03_entregas_tentativas"
    ).fetchone()
    assert logged is not None
    headers, status, outcome, attempt_no, dispatcher_id, digest = logged
    assert headers["Authorization"] == "***" and headers["X-Api-Token"] == "***"
    assert headers["X-Tenant"] == "acme"
    assert (status, outcome, attempt_no) == (200, "delivered", 1)
    assert dispatcher_id and len(digest) == 64


@pytest.mark.parametrize(
    ("auth_type", "credential", "header", "expected"),
    [
        ("basic", "user:pa ss", "Authorization", "Basic dXNlcjpwYSBzcw=="),
        ("api_key", "k-123", "X-Partner-Key", "k-123"),
    ],
)
async def test_outbound_auth(db_url, conn, receiver, auth_type, credential, header, expected):
    c = make_consumer(conn)
    hook = make_webhook(
        conn,
        c,
        receiver.url("/auth"),
        ["*"],
        auth_type=auth_type,
        auth_credential=credential,
        auth_header_name="X-Partner-Key" if auth_type == "api_key" else None,
    )
    emit(conn, "a.b")
    async with running(fast_settings(db_url)):
        assert await wait_until(lambda: statuses(conn, hook) == {"delivered": 1}, 10)
    assert receiver.to("/auth")[0].headers[header] == expected


async def test_always_500_goes_dead_after_schedule_keeping_webhook_id(db_url, conn, receiver):
    compress_schedule(conn, [0.05, 0.05, 0.05])
    c = make_consumer(conn)
    hook = make_webhook(conn, c, receiver.url("/500"), ["*"], breaker_config={"failure_threshold": 100})
    receiver.on("/500", default=Reply(status=500, body=b"nope"))
    emit(conn, "x.y")
    async with running(fast_settings(db_url)):
        assert await wait_until(lambda: statuses(conn, hook) == {"dead": 1}, 15)
        reqs = receiver.to("/500")
        assert len(reqs) == 4  # 1 + schedule length
        assert len({r.headers["webhook-id"] for r in reqs}) == 1
        assert len({r.headers["webhook-timestamp"] for r in reqs} | {r.body for r in reqs}) >= 2
        row = conn.execute("SELECT dead_reason, attempts FROM whk.whk_03_entregas").fetchone()
        assert row is not None and "500" in row[0] and row[1] == 4
        # Manual retry: same webhook-id, fresh schedule.
        conn.execute("SELECT whk.retry_delivery(id) FROM whk.whk_03_entregas")
        assert await wait_until(lambda: len(receiver.to("/500")) == 8, 15)
    assert {r.headers["webhook-id"] for r in receiver.to("/500")} == {reqs[0].headers["webhook-id"]}
    for r in receiver.to("/500"):
        verify(TEST_SECRET, r)


async def test_status_classes(db_url, conn, receiver):
    compress_schedule(conn, [30])
    c = make_consumer(conn)
    gone = make_webhook(conn, c, receiver.url("/gone"), ["s.*"])
    redirect = make_webhook(conn, c, receiver.url("/redirect"), ["s.*"])
    throttled = make_webhook(conn, c, receiver.url("/429"), ["s.*"])
    bad = make_webhook(conn, c, receiver.url("/400"), ["s.*"])
    receiver.on("/gone", default=Reply(status=410))
    receiver.on("/redirect", default=Reply(status=302, headers={"Location": "http://169.254.169.254/"}))
    receiver.on("/429", default=Reply(status=429, headers={"Retry-After": "45"}))
    receiver.on("/400", default=Reply(status=400))
    emit(conn, "s.c", count=2)
    async with running(fast_settings(db_url)):
        assert await wait_until(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM whk.whk_03_entregas_tentativas WHERE webhook_id = ANY(%s)",
                    [[gone, redirect, throttled, bad]],
                ).fetchone()[0]
                >= 7
            ),
            10,
        )
    assert statuses(conn, gone) == {"parked": 2}
    assert conn.execute("SELECT status FROM whk.whk_01_webhooks WHERE id = %s", [gone]).fetchone() == (
        "disabled",
    )
    assert len(receiver.to("/redirect")) == 2 and not any(r.path == "/" for r in receiver.requests)
    err = conn.execute(
        "SELECT error_detail FROM whk.whk_03_entregas_tentativas WHERE webhook_id = %s LIMIT 1", [redirect]
    ).fetchone()
    assert err is not None and "169.254.169.254" in err[0]
    # 429 with Retry-After 45 s: honoured (within [floor, 2 x scheduled delay] = up to 60 s).
    waits = conn.execute(
        "SELECT extract(epoch FROM next_attempt_at - last_attempt_at) FROM whk.whk_03_entregas "
        "WHERE webhook_id = %s",
        [throttled],
    ).fetchall()
    assert all(40 <= float(w[0]) <= 61 for w in waits), waits
    assert statuses(conn, bad) == {"pending": 2}


async def test_timeout_refused_and_reset(db_url, conn, receiver):
    compress_schedule(conn, [30])
    c = make_consumer(conn)
    slow = make_webhook(conn, c, receiver.url("/hang"), ["*"])
    receiver.on("/hang", default=Reply(hang=True))
    refused = make_webhook(conn, c, "http://127.0.0.1:9/closed", ["*"])
    reset = make_webhook(conn, c, receiver.url("/reset"), ["*"])
    receiver.on("/reset", default=Reply(reset=True))
    emit(conn, "t.r")
    started = time.monotonic()
    async with running(fast_settings(db_url, WHK_ATTEMPT_TIMEOUT="1", WHK_LEASE_SECONDS="3")):
        assert await wait_until(
            lambda: conn.execute("SELECT count(*) FROM whk.whk_03_entregas_tentativas").fetchone()[0] == 3, 10
        )
    assert time.monotonic() - started < 8
    rows = dict(conn.execute("SELECT webhook_id, error_class FROM whk.whk_03_entregas_tentativas").fetchall())
    assert rows[slow] == "timeout"
    assert rows[refused] in ("refused", "connect")
    assert rows[reset] in ("reset", "protocol")
    states = dict(conn.execute("SELECT webhook_id, status FROM whk.whk_03_entregas").fetchall())
    assert set(states.values()) == {"pending"}  # all three are failed attempts, retried later


async def test_ack_required(db_url, conn, receiver):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, receiver.url("/ack"), ["*"], require_ack=True)
    receiver.on("/ack", default=Reply(status=202))
    emit(conn, "a.k")
    async with running(fast_settings(db_url)):
        assert await wait_until(lambda: statuses(conn, hook) == {"awaiting_ack": 1}, 10)
        conn.execute("SELECT whk.ack_delivery(id) FROM whk.whk_03_entregas")
    assert statuses(conn, hook) == {"delivered": 1}


@pytest.mark.slow  # waits out three 1.5 s retries by design
async def test_ordered_lane_keeps_order_across_retries(db_url, conn, receiver):
    compress_schedule(conn, [1.5, 1.5, 1.5])
    c = make_consumer(conn)
    hook = make_webhook(conn, c, receiver.url("/ordered"), ["*"], delivery_mode="ordered")
    receiver.on("/ordered", Reply(status=500), Reply(status=500))  # A's first event fails twice
    emit(conn, "o.e", {"k": "A", "n": 0}, key="A")
    async with running(fast_settings(db_url)):
        assert await wait_until(lambda: len(receiver.to("/ordered")) >= 2, 10)  # both failures consumed
        for n in range(1, 5):
            emit(conn, "o.e", {"k": "A", "n": n}, key="A")
        for n in range(5):
            emit(conn, "o.e", {"k": "B", "n": n}, key="B")
        assert await wait_until(lambda: statuses(conn, hook) == {"delivered": 10}, 20)
    seen = [json.loads(r.body)["data"] for r in receiver.to("/ordered")]
    a = [d["n"] for d in seen if d["k"] == "A"]
    b = [d["n"] for d in seen if d["k"] == "B"]
    assert a == [0, 0, 0, 1, 2, 3, 4]  # two failures, then in order; nothing overtook the head
    assert b == [0, 1, 2, 3, 4]
    # B flowed while A's head was still waiting for its retries.
    a_success = [i for i, d in enumerate(seen) if d["k"] == "A"][2]
    assert seen.index({"k": "B", "n": 4, "seq": 0}) < a_success


async def test_batch_mode(db_url, conn, receiver):
    c = make_consumer(conn)
    hook = make_webhook(
        conn, c, receiver.url("/batch"), ["*"], delivery_mode="batch", batch_size=100, batch_window_ms=200
    )
    emit(conn, "b.e", count=1000)
    async with running(fast_settings(db_url)):
        assert await wait_until(lambda: statuses(conn, hook) == {"delivered": 1000}, 20)
    reqs = receiver.to("/batch")
    assert len(reqs) <= 10
    seqs = []
    for r in reqs:
        verify(TEST_SECRET, r)
        events = json.loads(r.body)
        batch = [e["data"]["seq"] for e in events]
        assert batch == sorted(batch)
        seqs.extend(batch)
    assert sorted(seqs) == list(range(1000))
    # One attempt row per HTTP request, not per event: each row lists its members, each delivery its attempt.
    attempts = conn.execute(
        "SELECT id, delivery_id, delivery_ids, response_status FROM whk.whk_03_entregas_tentativas "
        "WHERE webhook_id = %s ORDER BY id",
        [hook],
    ).fetchall()
    assert len(attempts) == len(reqs)
    members = sorted(m for _, _, ids, _ in attempts for m in ids)
    delivery_ids = [
        r[0] for r in conn.execute("SELECT id FROM whk.whk_03_entregas WHERE webhook_id = %s", [hook])
    ]
    assert members == sorted(delivery_ids)
    assert all(first == min(ids) and status == 200 for _, first, ids, status in attempts)
    links = conn.execute(
        "SELECT d.id, d.attempt_ids, t.delivery_ids FROM whk.whk_03_entregas d "
        "JOIN whk.whk_03_entregas_tentativas t ON t.id = d.attempt_ids[1] WHERE d.webhook_id = %s",
        [hook],
    ).fetchall()
    assert len(links) == 1000
    assert all(len(att) == 1 and d in ids for d, att, ids in links)


@pytest.mark.slow  # waits out the delay by design
async def test_delayed_not_before_its_time(db_url, conn, receiver):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, receiver.url("/later"), ["*"], delivery_mode="delayed")
    at = datetime.now(UTC) + timedelta(seconds=2)
    emit(conn, "d.e", deliver_at=at)
    async with running(fast_settings(db_url)):
        assert await wait_until(lambda: statuses(conn, hook) == {"delivered": 1}, 10)
    (req,) = receiver.to("/later")
    assert req.wall >= at.timestamp()


async def test_breaker_stops_traffic_then_probes_and_closes(db_url, conn, receiver):
    compress_schedule(conn, [0.05] * 20)
    c = make_consumer(conn)
    hook = make_webhook(
        conn,
        c,
        receiver.url("/flaky"),
        ["*"],
        breaker_config={"failure_threshold": 3, "open_s": 1.5},
        max_in_flight=1,
    )
    receiver.on("/flaky", *[Reply(status=500)] * 3)
    emit(conn, "f.e", count=5)
    async with running(fast_settings(db_url)):
        assert await wait_until(
            lambda: conn.execute("SELECT breaker_state FROM whk.webhook_runtime").fetchone() == ("open",), 10
        )
        opened = time.monotonic()
        count = len(receiver.to("/flaky"))
        assert count == 3
        assert await wait_until(lambda: len(receiver.to("/flaky")) > count, 5)
        probe_at = receiver.to("/flaky")[count].monotonic
        assert probe_at - opened >= 1.0  # nothing reached the endpoint while open
        assert await wait_until(lambda: statuses(conn, hook) == {"delivered": 5}, 10)
    assert conn.execute("SELECT breaker_state FROM whk.webhook_runtime").fetchone() == ("closed",)


@pytest.mark.slow  # waits out a token bucket by design
async def test_rate_limited_webhook_while_another_flows(db_url, conn, receiver):
    c = make_consumer(conn)
    limited = make_webhook(
        conn, c, receiver.url("/limited"), ["*"], rate_limit_per_second=10, rate_limit_burst=1
    )
    free = make_webhook(conn, c, receiver.url("/free"), ["*"])
    emit(conn, "r.l", count=200)
    async with running(fast_settings(db_url)):
        assert await wait_until(lambda: statuses(conn, free) == {"delivered": 200}, 15)
        await wait_until(lambda: False, 5.0)
    times = [r.monotonic for r in receiver.to("/limited")]
    window = [t for t in times if t - times[0] <= 5.0]
    assert 40 <= len(window) <= 56  # 10/s over 5 s, +/- tolerance for the bucket's first token
    assert statuses(conn, limited).get("pending", 0) > 0
