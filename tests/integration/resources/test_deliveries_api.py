"""Delivery resource: list filters and pages, detail with attempts, retry, dead letters, statistics,
bulk retry (dry run first, then a job run by the real worker) and explicit acks — all against rows in the
real tables."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from tests.support.ops import ops_settings, worker
from tests.support.receiver import wait_until
from tests.support.resources import World, audit_count, make_batch, make_delivery, make_webhook

pytestmark = pytest.mark.db

BASE = "/api/whk/deliveries"


async def _run_to_done(
    client: AsyncTestClient[Any],
    world: World,
    conn: psycopg.Connection[Any],
    db_url: str,
    bulk_id: int,
    *,
    requeued: int,
) -> None:
    """Run the job worker until the bulk retry is done, and check what it re-queued."""

    def finished() -> bool:
        row = conn.execute("SELECT state FROM whk.bulk_retries WHERE id = %s", (bulk_id,)).fetchone()
        return row == ("done",)

    async with worker(ops_settings(db_url)):
        assert await wait_until(finished, 30)
    r = await client.get(f"/api/whk/bulk-retries/{bulk_id}", headers=world.a.headers)
    assert (r.json()["state"], r.json()["requeued"]) == ("done", requeued)


def _status(conn: psycopg.Connection[Any], delivery_id: int) -> str:
    row = conn.execute("SELECT status FROM whk.whk_03_entregas WHERE id = %s", (delivery_id,)).fetchone()
    assert row is not None
    return str(row[0])


async def test_list_filters_and_pages(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    h1 = make_webhook(conn, world.a.consumer_id)
    h2 = make_webhook(conn, world.a.consumer_id, name="second")
    hb = make_webhook(conn, world.b.consumer_id)
    dead = [make_delivery(conn, h1, status="dead", attempts=2) for _ in range(3)]
    ok = make_delivery(conn, h2, status="delivered", attempts=1, event_type="order.shipped")
    make_delivery(conn, hb, status="dead")
    r = await client.get(BASE, headers=world.a.headers)
    assert r.status_code == 200
    assert [d["id"] for d in r.json()["items"]] == [ok, *reversed(dead)]
    r = await client.get(BASE, params={"status": "dead", "limit": 2}, headers=world.a.headers)
    page = r.json()
    assert [d["id"] for d in page["items"]] == [dead[2], dead[1]]
    r = await client.get(
        BASE, params={"status": "dead", "limit": 2, "cursor": page["next_cursor"]}, headers=world.a.headers
    )
    assert [d["id"] for d in r.json()["items"]] == [dead[0]] and r.json()["next_cursor"] is None
    r = await client.get(BASE, params=[("status", "dead"), ("status", "delivered")], headers=world.a.headers)
    assert len(r.json()["items"]) == 4
    r = await client.get(BASE, params={"event_type": "order.shipped"}, headers=world.a.headers)
    assert [d["id"] for d in r.json()["items"]] == [ok]
    r = await client.get(BASE, params={"webhook_id": hb}, headers=world.a.headers)
    assert r.status_code == 404  # another tenant's webhook, named in the query
    r = await client.get(BASE, params={"status": "dead"}, headers=world.admin)
    assert len(r.json()["items"]) == 4  # admin sees every tenant
    r = await client.get(BASE, params={"status": "gone'; --"}, headers=world.a.headers)
    assert r.status_code == 400


async def test_detail_shows_payload_and_attempts(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    h = make_webhook(conn, world.a.consumer_id)
    d = make_delivery(conn, h, status="delivered", attempts=3, data={"order": 42})
    r = await client.get(f"{BASE}/{d}", headers=world.a.headers)
    assert r.status_code == 200
    body = r.json()
    assert body["payload"]["data"] == {"order": 42}
    assert [a["attempt_no"] for a in body["attempt_log"]] == [1, 2, 3]
    assert body["attempt_log"][-1]["response_status"] == 200


async def test_a_delivery_parked_for_a_transform_says_why_and_is_not_retried(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    conn.execute("SELECT whk.register_event_type('inv.paid', '{\"type\": \"object\"}')")
    conn.execute("SELECT whk.register_event_type('inv.paid', '{\"type\": \"array\"}', new_major => true)")
    h = make_webhook(conn, world.a.consumer_id, event_types=("inv.*",))
    conn.execute("UPDATE whk.whk_01_webhooks SET payload_version = 1 WHERE id = %s", (h,))
    conn.execute("SELECT whk.emit('inv.paid', '{\"n\": 1}')")
    conn.execute("SELECT whk.route_and_take(100, NULL, 0, 0)")
    row = conn.execute("SELECT id FROM whk.whk_03_entregas WHERE webhook_id = %s", (h,)).fetchone()
    assert row is not None
    r = await client.get(f"{BASE}/{row[0]}", headers=world.a.headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "parked"
    assert r.json()["render_problem"].startswith("no transform from inv.paid v2 to v1")
    r = await client.post(f"{BASE}/{row[0]}/retry", headers=world.a.headers)
    assert r.status_code == 409
    assert "waits for a transform" in r.json()["detail"]
    assert _status(conn, row[0]) == "parked"

    conn.execute(
        "CREATE FUNCTION public.inv_v2_to_v1(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE"
        " RETURN jsonb_build_object('n', 1);"
        "GRANT USAGE ON SCHEMA public TO whk_dispatcher;"
        "SELECT whk.register_event_transform('inv.paid', 2, 1, 'public.inv_v2_to_v1')"
    )
    r = await client.get(f"{BASE}/{row[0]}", headers=world.a.headers)
    body = r.json()
    assert (body["status"], body["render_problem"]) == ("pending", None)
    assert (body["payload"]["version"], body["payload"]["data"]) == (1, {"n": 1})  # the body it will send


async def test_detail_shows_the_batch_attempt_a_delivery_took_part_in(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    # A batch request is one attempt row (delivery_id = its lowest member); every member lists it.
    first, second, attempt = make_batch(conn, make_webhook(conn, world.a.consumer_id))
    for d in (first, second):
        r = await client.get(f"{BASE}/{d}", headers=world.a.headers)
        assert r.status_code == 200
        assert [a["id"] for a in r.json()["attempt_log"]] == [attempt]


async def test_retry_requeues_with_the_same_event_id(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    h = make_webhook(conn, world.a.consumer_id)
    d = make_delivery(conn, h, status="dead", attempts=4)
    r = await client.post(f"{BASE}/{d}/retry", headers=world.a.headers)
    assert r.status_code == 200, r.text
    assert r.json()["requeued"] is True and r.json()["delivery"]["status"] == "pending"
    assert _status(conn, d) == "pending"
    assert audit_count(conn, "delivery.retry") == 1
    conn.execute("UPDATE whk.delivery_queue SET status = 'in_flight' WHERE id = %s", (d,))
    r = await client.post(f"{BASE}/{d}/retry", headers=world.a.headers)
    assert r.status_code == 409


async def test_failed_lists_dead_letters_only(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    h = make_webhook(conn, world.a.consumer_id)
    d1 = make_delivery(conn, h, status="dead")
    make_delivery(conn, h, status="delivered", attempts=1)
    d2 = make_delivery(conn, h, status="dead", event_type="order.cancelled")
    r = await client.get(f"{BASE}/failed", headers=world.a.headers)
    assert r.status_code == 200
    assert sorted(d["id"] for d in r.json()["items"]) == [d1, d2]
    assert all(d["status"] == "dead" for d in r.json()["items"])
    r = await client.get(f"{BASE}/failed", params={"event_type": "order.cancelled"}, headers=world.a.headers)
    assert [d["id"] for d in r.json()["items"]] == [d2]
    r = await client.get(f"{BASE}/failed", headers=world.b.headers)
    assert r.json()["items"] == []


async def test_stats_success_rate_latency_and_retry_rate(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    h = make_webhook(conn, world.a.consumer_id)
    make_delivery(conn, h, status="delivered", attempts=1)  # 10 ms
    make_delivery(conn, h, status="delivered", attempts=2)  # 10, 20 ms
    make_delivery(conn, h, status="dead", attempts=3)  # 10, 20, 30 ms
    make_delivery(conn, h, status="pending")
    hb = make_webhook(conn, world.b.consumer_id)
    make_delivery(conn, hb, status="dead", attempts=1)
    r = await client.get(f"{BASE}/stats", headers=world.a.headers)
    assert r.status_code == 200, r.text
    s = r.json()
    o = s["overall"]
    assert (o["total"], o["delivered"], o["dead"], o["in_progress"]) == (4, 2, 1, 1)
    assert o["success_rate"] == pytest.approx(2 / 3, rel=1e-4)
    assert o["retry_rate"] == pytest.approx(2 / 3, rel=1e-4)
    assert o["attempt_count"] == 6
    assert o["attempt_latency_ms"]["p50"] == pytest.approx(15.0)
    assert [w["key"] for w in s["per_webhook"]] == [h]
    assert [c["key"] for c in s["per_consumer"]] == [world.a.consumer_id]
    r = await client.get(f"{BASE}/stats", headers=world.admin)
    assert {c["key"] for c in r.json()["per_consumer"]} == {world.a.consumer_id, world.b.consumer_id}
    r = await client.get(
        f"{BASE}/stats",
        params={"since": "2030-01-01T00:00:00Z", "until": "2029-01-01T00:00:00Z"},
        headers=world.a.headers,
    )
    # both values fit the documented schema; their order is refused on its meaning
    assert r.status_code == 422
    assert r.json()["errors"][0]["pointer"] == "/query/since"


async def test_bulk_retry_dry_run_then_for_real(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any], db_url: str
):
    h = make_webhook(conn, world.a.consumer_id)
    dead = [make_delivery(conn, h, status="dead") for _ in range(3)]
    other = make_delivery(conn, h, status="dead", event_type="order.cancelled")
    done = make_delivery(conn, h, status="delivered", attempts=1)
    hb = make_webhook(conn, world.b.consumer_id)
    foreign = make_delivery(conn, hb, status="dead")
    body = {"event_type": "order.created", "status": ["dead"], "dry_run": True}
    r = await client.post(f"{BASE}/bulk-retry", json=body, headers=world.a.headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"dry_run": True, "matched": 3, "skipped_deleted_webhook": 0, "bulk_retry": None}
    assert all(_status(conn, d) == "dead" for d in dead)
    assert audit_count(conn, "bulk_retry.start") == 0
    r = await client.post(f"{BASE}/bulk-retry", json={**body, "dry_run": False}, headers=world.a.headers)
    assert r.status_code == 202, r.text
    assert (r.json()["matched"], r.json()["bulk_retry"]["total"]) == (3, 3)
    await _run_to_done(client, world, conn, db_url, r.json()["bulk_retry"]["id"], requeued=3)
    assert all(_status(conn, d) == "pending" for d in dead)
    assert (_status(conn, other), _status(conn, done), _status(conn, foreign)) == (
        "dead",
        "delivered",
        "dead",
    )
    assert audit_count(conn, "bulk_retry.start") == 1
    r = await client.post(f"{BASE}/bulk-retry", json={"status": ["in_flight"]}, headers=world.a.headers)
    assert r.status_code == 400  # in-flight rows are never retried


async def test_ack_confirms_awaiting_deliveries(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    h = make_webhook(conn, world.a.consumer_id)
    d = make_delivery(conn, h, status="awaiting_ack", attempts=1)
    r = await client.post(f"{BASE}/{d}/ack", headers=world.a.headers)
    assert r.status_code == 200, r.text
    assert r.json()["acked"] is True and r.json()["delivery"]["status"] == "delivered"
    r = await client.post(f"{BASE}/{d}/ack", headers=world.a.headers)  # idempotent
    assert r.status_code == 200 and r.json()["acked"] is True
    assert audit_count(conn, "delivery.ack") == 1
    p = make_delivery(conn, h, status="pending")
    r = await client.post(f"{BASE}/{p}/ack", headers=world.a.headers)
    assert r.status_code == 409


async def test_retry_refuses_deliveries_of_a_deleted_webhook(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any], db_url: str
):
    gone = make_webhook(conn, world.a.consumer_id)
    kept = make_webhook(conn, world.a.consumer_id, name="kept")
    dead = [make_delivery(conn, gone, status="dead") for _ in range(2)]
    alive = make_delivery(conn, kept, status="dead")
    conn.execute("SELECT whk.delete_webhook(%s)", [gone])
    r = await client.post(f"{BASE}/{dead[0]}/retry", headers=world.a.headers)
    assert r.status_code == 409, r.text
    assert "deleted" in r.json()["detail"]
    body = {"status": ["dead"], "dry_run": True}
    r = await client.post(f"{BASE}/bulk-retry", json=body, headers=world.a.headers)
    assert r.json() == {"dry_run": True, "matched": 1, "skipped_deleted_webhook": 2, "bulk_retry": None}
    r = await client.post(f"{BASE}/bulk-retry", json={**body, "dry_run": False}, headers=world.a.headers)
    assert r.status_code == 202, r.text
    assert (r.json()["matched"], r.json()["skipped_deleted_webhook"]) == (1, 2)
    await _run_to_done(client, world, conn, db_url, r.json()["bulk_retry"]["id"], requeued=1)
    assert [_status(conn, d) for d in (*dead, alive)] == ["dead", "dead", "pending"]
