"""Consumer resource: admin CRUD, self-service limits for a consumer credential, CIDR validation."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from tests.support.resources import World, audit_count, make_delivery, make_webhook

pytestmark = pytest.mark.db

BASE = "/api/whk/consumers"


async def test_admin_crud(client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]):
    body = {
        "name": "initech",
        "contact_email": "ops@initech.example",
        "allowed_ips": ["203.0.113.7/24", "2001:db8::1"],
        "api_rate_limit_per_minute": 120,
    }
    r = await client.post(BASE, json=body, headers=world.admin)
    assert r.status_code == 201, r.text
    c = r.json()
    assert c["allowed_ips"] == ["203.0.113.0/24", "2001:db8::1/128"]
    cid = c["id"]
    r = await client.put(
        f"{BASE}/{cid}", json={"status": "suspended", "rate_limit_per_second": 5.5}, headers=world.admin
    )
    assert (
        r.status_code == 200
        and r.json()["status"] == "suspended"
        and r.json()["rate_limit_per_second"] == 5.5
    )
    r = await client.get(BASE, params={"name_prefix": "init"}, headers=world.admin)
    assert [x["id"] for x in r.json()["items"]] == [cid]
    r = await client.post(BASE, json={"name": "initech"}, headers=world.admin)
    assert r.status_code == 409  # unique name
    r = await client.post(BASE, json={"name": "bad", "allowed_ips": ["10.0.0.300/8"]}, headers=world.admin)
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/allowed_ips/0"
    r = await client.delete(f"{BASE}/{cid}", headers=world.admin)
    assert r.status_code == 204
    assert (await client.get(f"{BASE}/{cid}", headers=world.admin)).status_code == 404
    assert [audit_count(conn, a) for a in ("consumer.create", "consumer.update", "consumer.delete")] == [
        1,
        1,
        1,
    ]


async def test_consumer_in_use_cannot_be_deleted(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    make_webhook(conn, world.a.consumer_id)
    r = await client.delete(f"{BASE}/{world.a.consumer_id}", headers=world.admin)
    assert r.status_code == 409


async def test_consumer_sees_and_edits_only_itself(client: AsyncTestClient[Any], world: World):
    r = await client.get(BASE, headers=world.a.headers)
    assert [c["id"] for c in r.json()["items"]] == [world.a.consumer_id]
    r = await client.put(
        f"{BASE}/{world.a.consumer_id}", json={"contact_name": "Ann"}, headers=world.a.headers
    )
    assert r.status_code == 200 and r.json()["contact_name"] == "Ann"
    r = await client.put(
        f"{BASE}/{world.a.consumer_id}", json={"quota_deliveries_per_day": 10**9}, headers=world.a.headers
    )
    assert r.status_code == 403
    r = await client.post(BASE, json={"name": "sneaky"}, headers=world.a.headers)
    assert r.status_code == 403


async def test_disabling_a_consumer_parks_its_deliveries_and_activating_releases_them(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    hook = make_webhook(conn, world.a.consumer_id)
    pending = make_delivery(conn, hook, status="pending")

    def status() -> str:
        row = conn.execute("SELECT status FROM whk.whk_03_entregas WHERE id = %s", [pending]).fetchone()
        assert row is not None
        return str(row[0])

    r = await client.put(f"{BASE}/{world.a.consumer_id}", json={"status": "disabled"}, headers=world.admin)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "disabled"
    assert status() == "parked"  # whk.set_consumer_status, not a plain column write
    r = await client.put(f"{BASE}/{world.a.consumer_id}", json={"status": "active"}, headers=world.admin)
    assert r.status_code == 200, r.text
    assert status() == "pending"
