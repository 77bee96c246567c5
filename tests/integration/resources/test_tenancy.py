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


async def test_one_rule_other_tenants_are_404_more_privilege_is_403(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    """The rule of docs/api.md (Tenancy): another tenant's id named in a path, a query or a body is 404 —
    never an empty 200 list nor a 422; asking for more privilege than the credential holds (an admin key,
    the admin scope, a scope it lacks, an admin-only setting or route) is 403. Nothing changes either way."""
    from api.keys import create_api_key

    a, b = world.a.headers, world.b.consumer_id
    narrow = create_api_key(
        conn, admin=False, consumer_id=world.a.consumer_id, name="narrow", scopes=["api-keys:*"], actor="test"
    )
    condition = {"metric": "dead_letters", "operator": ">", "threshold": 1}
    before = _snapshot(conn), conn.execute("SELECT count(*) FROM whk.api_keys").fetchone()
    invisible: list[tuple[str, str, Any]] = [
        ("GET", f"/api/whk/webhooks?consumer_id={b}", None),
        ("GET", f"/api/whk/api-keys?consumer_id={b}", None),
        ("GET", f"/api/whk/security/audit?consumer_id={b}", None),
        ("GET", f"/api/whk/deliveries?consumer_id={b}", None),
        ("GET", f"/api/whk/deliveries/failed?consumer_id={b}", None),
        (
            "POST",
            "/api/whk/webhooks",
            {"name": "x", "url": "http://127.0.0.1:9/h", "event_types": ["*"], "consumer_id": b},
        ),
        ("POST", "/api/whk/api-keys", {"name": "x", "consumer_id": b}),
        ("POST", "/api/whk/monitoring/alerts", {"name": "x", "condition": condition, "consumer_id": b}),
    ]
    for method, path, body in invisible:
        r = await client.request(method, path, json=body, headers=a)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    forbidden: list[tuple[dict[str, str], str, str, Any]] = [
        (a, "POST", "/api/whk/api-keys", {"name": "an admin key"}),
        (
            a,
            "POST",
            "/api/whk/api-keys",
            {"name": "x", "consumer_id": world.a.consumer_id, "scopes": ["admin"]},
        ),
        (
            {"Authorization": f"Bearer {narrow}"},
            "POST",
            "/api/whk/api-keys",
            {"name": "x", "consumer_id": world.a.consumer_id, "scopes": ["webhooks:write"]},
        ),
        (a, "PUT", f"/api/whk/consumers/{world.a.consumer_id}", {"rate_limit_per_second": 5}),
        (a, "POST", "/api/whk/consumers", {"name": "mine"}),
        (a, "POST", "/api/whk/events/trigger", {"type": "order.created", "data": {}}),
    ]
    for headers, method, path, body in forbidden:
        r = await client.request(method, path, json=body, headers=headers)
        assert r.status_code == 403, (method, path, body, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert (_snapshot(conn), conn.execute("SELECT count(*) FROM whk.api_keys").fetchone()) == before
    # naming yourself is fine everywhere
    own = world.a.consumer_id
    for path in (
        f"/api/whk/webhooks?consumer_id={own}",
        f"/api/whk/api-keys?consumer_id={own}",
        f"/api/whk/security/audit?consumer_id={own}",
        f"/api/whk/deliveries?consumer_id={own}",
    ):
        r = await client.get(path, headers=a)
        assert r.status_code == 200, (path, r.text)
    r = await client.post(
        "/api/whk/webhooks",
        json={"name": "mine", "url": "http://127.0.0.1:9/h", "event_types": ["*"], "consumer_id": own},
        headers=a,
    )
    assert r.status_code == 201, r.text
    # admins name any consumer; one that does not exist is simply not there
    r = await client.get(f"/api/whk/webhooks?consumer_id={b}", headers=world.admin)
    assert r.status_code == 200
