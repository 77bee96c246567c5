"""Event resource: the seeded catalog, registration/versioning through whk.register_event_type, custom
triggers through whk.emit (validated with JSON Schema first), history and volume statistics."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from tests.support.resources import World, audit_count, make_delivery, make_webhook

pytestmark = pytest.mark.db

BASE = "/api/whk/events"
LOGIN = {"user_id": 1, "session_id": "s1", "at": "2026-01-01T00:00:00Z"}
INVOICE = {
    "type": "object",
    "required": ["invoice_id", "amount"],
    "properties": {"invoice_id": {"type": "integer"}, "amount": {"type": "number", "minimum": 0}},
}


async def test_catalog_lists_the_seeded_types(client: AsyncTestClient[Any], world: World):
    r = await client.get(BASE, headers=world.a.headers)
    assert r.status_code == 200
    names = [t["name"] for t in r.json()["items"]]
    assert {"order.created", "user.login", "product.out_of_stock", "system.startup"} <= set(names)
    assert names == sorted(names)
    r = await client.get(BASE, params={"category": "user", "limit": 2}, headers=world.a.headers)
    first = r.json()
    assert all(t["category"] == "user" for t in first["items"]) and first["next_cursor"]
    r = await client.get(
        BASE, params={"category": "user", "cursor": first["next_cursor"]}, headers=world.a.headers
    )
    assert {t["name"] for t in r.json()["items"]}.isdisjoint({t["name"] for t in first["items"]})


async def test_detail_has_versions_and_counters(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    h = make_webhook(conn, world.a.consumer_id, event_types=("order.*",))
    make_delivery(conn, h, status="dead")
    make_delivery(conn, h, status="delivered", attempts=1)
    r = await client.get(f"{BASE}/order.created", headers=world.a.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == "1.0"
    assert body["versions"][0]["schema"]["type"] == "object"
    assert body["counters"]["deliveries"] == {"dead": 1, "delivered": 1}
    assert body["counters"]["subscribed_webhooks"] == 1
    assert body["counters"]["events_24h"] is None  # platform-wide volume is for admins
    r = await client.get(f"{BASE}/order.created", headers=world.admin)
    assert r.json()["counters"]["events_24h"] == 2
    assert (await client.get(f"{BASE}/nope.nothing", headers=world.a.headers)).status_code == 404
    assert (await client.get(f"{BASE}/NOT A TYPE", headers=world.a.headers)).status_code == 404


async def test_register_then_version_and_refuse_breaking_change(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    body = {"name": "invoice.paid", "schema": INVOICE, "description": "An invoice was paid."}
    r = await client.post(BASE, json=body, headers=world.a.headers)
    assert r.status_code == 403  # registering affects every tenant: admins only
    r = await client.post(BASE, json=body, headers=world.admin)
    assert r.status_code == 201, r.text
    assert r.json() == {"name": "invoice.paid", "version": "1.0", "created": True}
    additive = {**INVOICE, "properties": {**INVOICE["properties"], "currency": {"type": "string"}}}
    r = await client.post(BASE, json={"name": "invoice.paid", "schema": additive}, headers=world.admin)
    assert r.status_code == 201 and r.json()["version"] == "1.1"
    breaking = {**INVOICE, "required": ["invoice_id", "amount", "payer"]}
    r = await client.post(BASE, json={"name": "invoice.paid", "schema": breaking}, headers=world.admin)
    assert r.status_code == 422
    assert r.json()["errors"][0]["pointer"] == "/schema"
    r = await client.post(
        BASE, json={"name": "invoice.paid", "schema": breaking, "new_major": True}, headers=world.admin
    )
    assert r.status_code == 201 and r.json()["version"] == "2.0"
    r = await client.post(BASE, json={"name": "invoice.paid", "schema": {"type": 12}}, headers=world.admin)
    assert r.status_code == 422
    assert audit_count(conn, "event_type.register") == 1
    assert audit_count(conn, "event_type.version") == 2
    r = await client.get(f"{BASE}/invoice.paid", headers=world.a.headers)
    assert [f"{v['major']}.{v['minor']}" for v in r.json()["versions"]] == ["2.0", "1.1", "1.0"]


async def test_a_new_major_stranding_a_pinned_webhook_needs_force_and_the_detail_lists_transforms(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    r = await client.post(BASE, json={"name": "invoice.paid", "schema": INVOICE}, headers=world.admin)
    assert r.status_code == 201, r.text
    h = make_webhook(conn, world.a.consumer_id, event_types=("invoice.*",), name="legacy")
    conn.execute("UPDATE whk.whk_01_webhooks SET payload_version = 1 WHERE id = %s", [h])
    v2 = {"name": "invoice.paid", "schema": {"type": "object"}, "new_major": True}
    r = await client.post(BASE, json=v2, headers=world.admin)
    assert r.status_code == 422, r.text
    message = r.json()["errors"][0]["message"]
    assert f"{h} 'legacy' (pinned to v1)" in message and "force => true" in message
    r = await client.post(BASE, json={**v2, "force": True}, headers=world.admin)
    assert r.status_code == 201 and r.json()["version"] == "2.0"

    conn.execute(
        "CREATE FUNCTION public.invoice_v2_to_v1(data jsonb) RETURNS jsonb"
        " LANGUAGE sql IMMUTABLE RETURN data;"
        "GRANT USAGE ON SCHEMA public TO whk_dispatcher;"
        "SELECT whk.register_event_transform('invoice.paid', 2, 1, 'public.invoice_v2_to_v1')"
    )
    r = await client.get(f"{BASE}/invoice.paid", headers=world.a.headers)
    assert [(t["from_major"], t["to_major"], t["function"]) for t in r.json()["transforms"]] == [
        (2, 1, "public.invoice_v2_to_v1")
    ]
    r = await client.get(f"{BASE}/order.created", headers=world.a.headers)
    assert r.json()["transforms"] == []


async def test_trigger_validates_then_emits_through_whk_emit(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    r = await client.post(
        f"{BASE}/trigger", json={"type": "user.login", "data": {"user_id": []}}, headers=world.admin
    )
    assert r.status_code == 422
    pointers = {e["pointer"] for e in r.json()["errors"]}
    assert {"/data", "/data/user_id"} <= pointers  # every error: missing required ones and the bad type
    assert conn.execute("SELECT count(*) FROM whk.outbox").fetchone() == (0,)
    r = await client.post(
        f"{BASE}/trigger", json={"type": "user.login", "data": LOGIN, "key": "user-1"}, headers=world.admin
    )
    assert r.status_code == 201, r.text
    event_id = r.json()["event_id"]
    row = conn.execute(
        "SELECT event_type, event_key, operation, payload -> 'data' FROM whk.outbox_events"
        " WHERE event_id = %s",
        (event_id,),
    ).fetchone()
    assert row == ("user.login", "user-1", "EMIT", LOGIN)
    assert audit_count(conn, "event.trigger") == 1
    r = await client.post(f"{BASE}/trigger", json={"type": "nope.never", "data": {}}, headers=world.admin)
    assert r.status_code == 422
    r = await client.post(
        f"{BASE}/trigger", json={"type": "user.login", "data": LOGIN}, headers=world.a.headers
    )
    assert r.status_code == 403


async def test_history_and_stats(client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]):
    for _ in range(3):
        await client.post(f"{BASE}/trigger", json={"type": "user.login", "data": LOGIN}, headers=world.admin)
    h = make_webhook(conn, world.a.consumer_id)
    mine = make_delivery(conn, h, event_type="order.created")
    r = await client.get(f"{BASE}/history", headers=world.admin)
    assert r.status_code == 200
    assert [e["event_type"] for e in r.json()["items"]] == [
        "order.created",
        "user.login",
        "user.login",
        "user.login",
    ]
    r = await client.get(
        f"{BASE}/history", params={"event_type": "user.login", "limit": 2}, headers=world.admin
    )
    page = r.json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    r = await client.get(
        f"{BASE}/history",
        params={"event_type": "user.login", "cursor": page["next_cursor"]},
        headers=world.admin,
    )
    assert len(r.json()["items"]) == 1
    r = await client.get(f"{BASE}/history", headers=world.a.headers)  # only what reached the tenant
    items = r.json()["items"]
    assert [(e["event_type"], e["deliveries"]) for e in items] == [("order.created", 1)]
    assert mine
    r = await client.get(f"{BASE}/stats", headers=world.admin)
    assert r.status_code == 200
    assert r.json()["totals"] == {"user.login": 3, "order.created": 1}
    assert r.json()["interval"] == "hour"
    r = await client.get(f"{BASE}/stats", params={"interval": "day"}, headers=world.a.headers)
    assert r.json()["totals"] == {"order.created": 1}
    r = await client.get(f"{BASE}/stats", params={"interval": "minute"}, headers=world.admin)
    assert r.status_code == 400


async def test_tenant_history_pages_and_filters(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    h = make_webhook(conn, world.a.consumer_id)
    h2 = make_webhook(conn, world.a.consumer_id, name="second")
    ids = [make_delivery(conn, h, event_type="order.created") for _ in range(3)]
    shipped = make_delivery(conn, h, event_type="order.shipped")
    # the same event also reached the tenant's second webhook: one history row, two deliveries
    conn.execute(
        "INSERT INTO whk.delivery_queue "
        "(event_id, outbox_id, event_created_at, event_type, webhook_id, consumer_id) "
        "SELECT gen_random_uuid(), outbox_id, event_created_at, event_type, %s, consumer_id "
        "FROM whk.whk_03_entregas WHERE id = %s",
        (h2, shipped),
    )
    conn.execute(
        "UPDATE whk.outbox o SET event_key = 'k-1' FROM whk.whk_03_entregas d "
        "WHERE d.id = %s AND o.id = d.outbox_id",
        (ids[0],),
    )
    seen: list[tuple[str, int]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(f"{BASE}/history", params=params, headers=world.a.headers)).json()
        seen += [(e["event_type"], e["deliveries"]) for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [("order.shipped", 2), ("order.created", 1), ("order.created", 1), ("order.created", 1)]
    r = await client.get(f"{BASE}/history", params={"event_key": "k-1"}, headers=world.a.headers)
    assert [e["event_key"] for e in r.json()["items"]] == ["k-1"]
    r = await client.get(f"{BASE}/history", params={"operation": "INSERT"}, headers=world.a.headers)
    assert r.json()["items"] == []
    r = await client.get(f"{BASE}/history", params={"event_type": "order.shipped"}, headers=world.b.headers)
    assert r.json()["items"] == []
