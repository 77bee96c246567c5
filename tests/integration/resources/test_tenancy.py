"""Tenancy matrix: another tenant's ids answer 404 for read, update, delete, test, logs, retry, ack,
rotate and validate-by-webhook — and nothing changes (rows, audit trail)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from tests.support.resources import World, make_delivery

pytestmark = pytest.mark.db


def _snapshot(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    return (
        conn.execute("SELECT w::text FROM whk.whk_01_webhooks w ORDER BY id").fetchall(),
        conn.execute("SELECT d::text FROM whk.whk_03_entregas d ORDER BY id").fetchall(),
        conn.execute("SELECT id, key_id, expires_at FROM whk.webhook_secrets ORDER BY id").fetchall(),
        conn.execute("SELECT a::text FROM whk.whk_04_assinantes a ORDER BY id").fetchall(),
        conn.execute("SELECT count(*) FROM whk.audit_log").fetchone(),
        conn.execute("SELECT count(*) FROM whk.outbox").fetchone(),
    )


async def test_other_tenants_ids_are_404_with_no_side_effect(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    r = await client.post(
        "/api/whk/webhooks",
        json={"name": "b-hook", "url": "http://127.0.0.1:9/h", "event_types": ["*"]},
        headers=world.b.headers,
    )
    hid = r.json()["webhook"]["id"]
    dead = make_delivery(conn, hid, status="dead", attempts=1)
    waiting = make_delivery(conn, hid, status="awaiting_ack", attempts=1)
    before = _snapshot(conn)
    a = world.a.headers
    calls = [
        ("GET", f"/api/whk/webhooks/{hid}", None),
        ("PUT", f"/api/whk/webhooks/{hid}", {"name": "stolen"}),
        ("DELETE", f"/api/whk/webhooks/{hid}", None),
        ("POST", f"/api/whk/webhooks/{hid}/test", {}),
        ("GET", f"/api/whk/webhooks/{hid}/logs", None),
        ("GET", f"/api/whk/deliveries/{dead}", None),
        ("POST", f"/api/whk/deliveries/{dead}/retry", None),
        ("POST", f"/api/whk/deliveries/{waiting}/ack", None),
        ("POST", "/api/whk/security/rotate-key", {"webhook_id": hid}),
        ("GET", "/api/whk/security/signatures?webhook_id=" + str(hid), None),
        ("GET", f"/api/whk/consumers/{world.b.consumer_id}", None),
        ("PUT", f"/api/whk/consumers/{world.b.consumer_id}", {"contact_name": "x"}),
    ]
    for method, path, body in calls:
        r = await client.request(method, path, json=body, headers=a)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    # ids named in a query or a body are checked the same way
    for method, path, body in [
        ("POST", "/api/whk/deliveries/bulk-retry", {"webhook_id": hid}),
        ("GET", f"/api/whk/deliveries?webhook_id={hid}", None),
        ("GET", f"/api/whk/deliveries/failed?consumer_id={world.b.consumer_id}", None),
        ("GET", f"/api/whk/deliveries/stats?webhook_id={hid}", None),
        (
            "POST",
            "/api/whk/security/validate",
            {
                "payload": {},
                "event_type": "user.login",
                "webhook_id": hid,
                "headers": {"webhook-id": "m", "webhook-timestamp": "1", "webhook-signature": "v1,x"},
            },
        ),
        (
            "POST",
            "/api/whk/monitoring/alerts",
            {
                "name": "x",
                "condition": {"metric": "dead_letters", "operator": ">", "threshold": 1, "webhook_id": hid},
            },
        ),
    ]:
        r = await client.request(method, path, json=body, headers=a)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
    # lists simply show nothing of the other tenant
    r = await client.get("/api/whk/deliveries", headers=a)
    assert r.json()["items"] == []
    assert _snapshot(conn) == before
    # the owner still can
    r = await client.post(f"/api/whk/deliveries/{dead}/retry", headers=world.b.headers)
    assert r.status_code == 200
