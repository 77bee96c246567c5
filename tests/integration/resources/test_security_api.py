"""Security resource: signing keys listed without secrets, rotation with a grace period and at most N
old keys, the audit trail with filters, and the payload/signature validator with JSON pointers."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient
from standardwebhooks.webhooks import Webhook as SwSigner

from tests.support.resources import World, audit_count

pytestmark = pytest.mark.db

BASE = "/api/whk/security"
LOGIN = {"user_id": 1, "session_id": "s1", "at": "2026-01-01T00:00:00Z"}


async def _hook(client: AsyncTestClient[Any], world: World) -> tuple[int, str]:
    r = await client.post(
        "/api/whk/webhooks",
        json={"name": "h", "url": "http://127.0.0.1:9/h", "event_types": ["*"]},
        headers=world.a.headers,
    )
    assert r.status_code == 201, r.text
    return int(r.json()["webhook"]["id"]), str(r.json()["signing_secret"])


async def test_signatures_show_key_ids_never_secrets(client: AsyncTestClient[Any], world: World):
    hid, secret = await _hook(client, world)
    r = await client.get(f"{BASE}/signatures", headers=world.a.headers)
    assert r.status_code == 200
    (key,) = r.json()["items"]
    assert key["webhook_id"] == hid and key["state"] == "current" and key["expires_at"] is None
    assert secret not in r.text and "whsec_" not in r.text and "secret_enc" not in r.text
    assert (await client.get(f"{BASE}/signatures", headers=world.b.headers)).json()["items"] == []


async def test_rotate_keeps_old_key_for_grace_and_caps_old_keys(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    hid, first = await _hook(client, world)
    r = await client.post(f"{BASE}/rotate-key", json={"webhook_id": hid}, headers=world.a.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["signing_secret"].startswith("whsec_") and body["signing_secret"] != first
    states = {k["key_id"]: k["state"] for k in body["valid_keys"]}
    assert states[body["key_id"]] == "current" and sorted(states.values()) == ["current", "grace"]
    hours = conn.execute(
        "SELECT extract(epoch FROM expires_at - now()) / 3600 FROM whk.webhook_secrets "
        "WHERE expires_at IS NOT NULL"
    ).fetchone()
    assert hours is not None and 23.9 < float(hours[0]) <= 24.0
    for _ in range(11):
        r = await client.post(
            f"{BASE}/rotate-key", json={"webhook_id": hid, "grace_hours": 1}, headers=world.a.headers
        )
        assert r.status_code == 200
    valid = r.json()["valid_keys"]
    assert len(valid) == 11  # the current key + at most 10 old ones
    assert sum(1 for k in valid if k["state"] == "grace") == 10
    assert audit_count(conn, "webhook.secret_rotate") == 12
    audit = conn.execute(
        "SELECT after::text FROM whk.audit_log WHERE action = 'webhook.secret_rotate'"
    ).fetchall()
    assert all("whsec_" not in row[0] for row in audit)
    # revoke at once (leaked secret)
    leaked = r.json()["key_id"]
    r = await client.post(
        f"{BASE}/rotate-key", json={"webhook_id": hid, "grace_hours": 0}, headers=world.a.headers
    )
    assert leaked not in {k["key_id"] for k in r.json()["valid_keys"]}


async def test_audit_filters_and_tenancy(client: AsyncTestClient[Any], world: World):
    hid, _ = await _hook(client, world)
    await client.put(f"/api/whk/webhooks/{hid}", json={"name": "renamed"}, headers=world.a.headers)
    r = await client.get(f"{BASE}/audit", params={"target_type": "webhook"}, headers=world.a.headers)
    assert r.status_code == 200
    assert [a["action"] for a in r.json()["items"]] == ["webhook.update", "webhook.create"]
    r = await client.get(f"{BASE}/audit", params={"action": "webhook.update"}, headers=world.a.headers)
    (row,) = r.json()["items"]
    assert row["before"]["name"] == "h" and row["after"]["name"] == "renamed"
    r = await client.get(f"{BASE}/audit", params={"limit": 1}, headers=world.a.headers)
    assert r.json()["next_before_id"] is not None
    r = await client.get(f"{BASE}/audit", params={"target_type": "webhook"}, headers=world.b.headers)
    assert r.json()["items"] == []  # the other tenant sees none of it


async def test_validate_reports_every_schema_error_with_a_pointer(client: AsyncTestClient[Any], world: World):
    envelope = {"type": "user.login", "timestamp": "2026-01-01T00:00:00Z", "data": {"user_id": [], "ip": 5}}
    r = await client.post(f"{BASE}/validate", json={"payload": envelope}, headers=world.a.headers)
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["valid"] is False and res["schema_version"] == "1.0"
    pointers = {e["pointer"] for e in res["errors"]}
    assert {"/payload/data/user_id", "/payload/data/ip", "/payload/data"} <= pointers
    r = await client.post(
        f"{BASE}/validate", json={"event_type": "user.login", "payload": LOGIN}, headers=world.a.headers
    )
    assert r.json()["valid"] is True and r.json()["errors"] == []
    r = await client.post(f"{BASE}/validate", json={"body": "{not json"}, headers=world.a.headers)
    assert r.json()["valid"] is False and r.json()["errors"][0]["pointer"] == "/body"


async def test_validate_checks_standard_webhooks_signatures(client: AsyncTestClient[Any], world: World):
    hid, secret = await _hook(client, world)
    body = '{"type":"user.login","timestamp":"2026-01-01T00:00:00Z","data":' + (
        '{"user_id":1,"session_id":"s1","at":"2026-01-01T00:00:00Z"}}'
    )
    now = int(time.time())
    from datetime import UTC, datetime

    sig = SwSigner(secret).sign("msg_1", datetime.fromtimestamp(now, tz=UTC), body)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": sig}
    r = await client.post(
        f"{BASE}/validate", json={"body": body, "headers": headers, "secret": secret}, headers=world.a.headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["valid"] is True and r.json()["signature_valid"] is True
    # the webhook's stored keys work too (tenant's own webhook only)
    r = await client.post(
        f"{BASE}/validate",
        json={"body": body, "headers": headers, "webhook_id": hid},
        headers=world.a.headers,
    )
    assert r.json()["signature_valid"] is True
    r = await client.post(
        f"{BASE}/validate",
        json={"body": body, "headers": headers, "webhook_id": hid},
        headers=world.b.headers,
    )
    assert r.status_code == 404
    tampered = body.replace('"s1"', '"s2"')
    r = await client.post(
        f"{BASE}/validate",
        json={"body": tampered, "headers": headers, "secret": secret},
        headers=world.a.headers,
    )
    assert r.json()["signature_valid"] is False
    assert {
        "pointer": "/headers/webhook-signature",
        "message": "no signature matches the webhook's secrets",
    } in r.json()["errors"]
    old = {**headers, "webhook-timestamp": str(now - 3600)}
    r = await client.post(
        f"{BASE}/validate", json={"body": body, "headers": old, "secret": secret}, headers=world.a.headers
    )
    assert r.json()["errors"][0]["pointer"] == "/headers/webhook-timestamp"
