"""Dead-letter purge: one (DELETE /deliveries/{id}, 409 unless dead) or by filters (POST /deliveries/purge,
dry run first); audited, tenant-scoped, and the state change is whk.purge_dead_deliveries."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from tests.support.resources import World, audit_count, make_delivery, make_webhook

pytestmark = pytest.mark.db

BASE = "/api/whk/deliveries"


def _exists(conn: psycopg.Connection[Any], delivery_id: int) -> bool:
    row = conn.execute("SELECT count(*) FROM whk.whk_03_entregas WHERE id = %s", (delivery_id,)).fetchone()
    return row == (1,)


async def test_delete_purges_one_dead_letter_only(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
) -> None:
    h = make_webhook(conn, world.a.consumer_id)
    dead = make_delivery(conn, h, status="dead", attempts=2)
    conn.execute(
        "INSERT INTO whk.whk_03_entregas_tentativas (delivery_id, webhook_id, attempt_no, request_method,"
        " request_url, outcome) VALUES (%s, %s, 1, 'POST', 'https://example.com', 'failed')",
        (dead, h),
    )
    for status in ("pending", "delivered", "parked", "awaiting_ack", "cancelled"):
        other = make_delivery(conn, h, status=status)
        r = await client.delete(f"{BASE}/{other}", headers=world.a.headers)
        assert r.status_code == 409, status
        assert r.headers["content-type"].startswith("application/problem+json")
        assert _exists(conn, other)
    foreign = make_delivery(conn, make_webhook(conn, world.b.consumer_id), status="dead")
    r = await client.delete(f"{BASE}/{foreign}", headers=world.a.headers)
    assert r.status_code == 404  # another tenant's dead letter is not found
    assert _exists(conn, foreign)
    r = await client.delete(f"{BASE}/{dead}", headers=world.a.headers)
    assert r.status_code == 204, r.text
    assert not _exists(conn, dead)
    left = conn.execute(
        "SELECT count(*) FROM whk.whk_03_entregas_tentativas WHERE delivery_id = %s", (dead,)
    ).fetchone()
    assert left == (0,)
    assert audit_count(conn, "delivery.purge") == 1
    row = conn.execute(
        "SELECT target_id, consumer_id, before ->> 'status' FROM whk.audit_log"
        " WHERE action = 'delivery.purge'"
    ).fetchone()
    assert row == (str(dead), world.a.consumer_id, "dead")
    r = await client.delete(f"{BASE}/{dead}", headers=world.a.headers)
    assert r.status_code == 404
    r = await client.delete(f"{BASE}/{foreign}", headers=world.admin)
    assert r.status_code == 204  # an admin reaches every tenant


async def test_purge_removes_exactly_what_the_dry_run_counted(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
) -> None:
    h = make_webhook(conn, world.a.consumer_id)
    h2 = make_webhook(conn, world.a.consumer_id, name="second")
    dead = {make_delivery(conn, h, status="dead") for _ in range(4)}
    kept = {
        make_delivery(conn, h, status="dead", event_type="order.cancelled"),
        make_delivery(conn, h2, status="dead"),
        make_delivery(conn, h, status="pending"),
        make_delivery(conn, h, status="delivered"),
        make_delivery(conn, make_webhook(conn, world.b.consumer_id), status="dead"),
    }
    body = {"webhook_id": h, "event_type": "order.created", "dry_run": True}
    r = await client.post(f"{BASE}/purge", json=body, headers=world.a.headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"dry_run": True, "matched": 4, "purged": 0}
    assert all(_exists(conn, d) for d in dead)
    assert audit_count(conn, "delivery.purge") == 0
    r = await client.post(f"{BASE}/purge", json={**body, "dry_run": False}, headers=world.a.headers)
    assert r.json() == {"dry_run": False, "matched": 4, "purged": 4}
    assert not any(_exists(conn, d) for d in dead)
    assert all(_exists(conn, d) for d in kept)
    assert audit_count(conn, "delivery.purge") == 1
    # Tenant-scoped without a webhook filter too: tenant a's remaining dead letters only.
    r = await client.post(f"{BASE}/purge", json={"dry_run": True}, headers=world.a.headers)
    assert r.json()["matched"] == 2
    r = await client.post(f"{BASE}/purge", json={"max_deliveries": 1}, headers=world.a.headers)
    assert r.json() == {"dry_run": False, "matched": 2, "purged": 1}


async def test_purge_input_is_checked(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
) -> None:
    hb = make_webhook(conn, world.b.consumer_id)
    r = await client.post(f"{BASE}/purge", json={"webhook_id": hb}, headers=world.a.headers)
    assert r.status_code == 404  # another tenant's webhook named in the body
    r = await client.post(f"{BASE}/purge", json={"status": ["pending"]}, headers=world.a.headers)
    assert r.status_code == 400  # no status filter: only dead letters are purged
    r = await client.post(f"{BASE}/purge", json={"max_deliveries": 0}, headers=world.a.headers)
    assert r.status_code == 400
    assert "max_deliveries" in r.text
    r = await client.post(
        f"{BASE}/purge",
        json={"created_from": "2026-01-02T00:00:00Z", "created_to": "2026-01-01T00:00:00Z"},
        headers=world.a.headers,
    )
    assert r.status_code == 422
    assert r.json()["errors"][0]["pointer"] == "/created_to"


def test_the_sql_function_deletes_only_dead_rows(conn: psycopg.Connection[Any]) -> None:
    consumer = conn.execute("INSERT INTO whk.whk_04_assinantes (name) VALUES ('c') RETURNING id").fetchone()
    assert consumer is not None
    h = make_webhook(conn, consumer[0])
    dead = make_delivery(conn, h, status="dead")
    pending = make_delivery(conn, h, status="pending")
    got = conn.execute("SELECT * FROM whk.purge_dead_deliveries(%s)", ([dead, pending, 10**12],)).fetchall()
    assert got == [(dead,)]
    assert _exists(conn, pending)
