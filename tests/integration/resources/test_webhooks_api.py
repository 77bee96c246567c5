"""Webhook resource: CRUD, validation (SSRF rule, PostgreSQL's jsonpath message), secrets, tenancy, audit,
the simulator against a real receiver on 127.0.0.1, and the attempt log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient
from standardwebhooks.webhooks import Webhook as SwVerifier

from tests.support.resources import World, audit_count, make_delivery

pytestmark = pytest.mark.db

BASE = "/api/whk/webhooks"


def _body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "orders", "url": "http://127.0.0.1:9/hook", "event_types": ["order.*"]}
    body.update(over)
    return body


async def test_create_read_update_delete(client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]):
    r = await client.post(BASE, json=_body(), headers=world.a.headers)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["signing_secret"].startswith("whsec_")
    assert created["key_id"].startswith("key_")
    hook = created["webhook"]
    assert hook["consumer_id"] == world.a.consumer_id
    hid = hook["id"]
    # the secret is stored encrypted, never in plaintext
    row = conn.execute("SELECT secret_enc FROM whk.webhook_secrets WHERE webhook_id = %s", (hid,)).fetchone()
    assert row is not None and b"whsec_" not in bytes(row[0])
    assert audit_count(conn, "webhook.create") == 1

    r = await client.get(f"{BASE}/{hid}", headers=world.a.headers)
    assert r.status_code == 200 and r.json()["name"] == "orders"
    assert "signing_secret" not in r.json()

    r = await client.put(f"{BASE}/{hid}", json={"name": "orders v2", "filter": "$.data.total > 100"},
                         headers=world.a.headers)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "orders v2"
    assert r.json()["filter"] == "($.\"data\".\"total\" > 100)"
    assert audit_count(conn, "webhook.update") == 1

    r = await client.get(BASE, headers=world.a.headers)
    assert [h["id"] for h in r.json()["items"]] == [hid]

    r = await client.delete(f"{BASE}/{hid}", headers=world.a.headers)
    assert r.status_code == 204
    r = await client.get(f"{BASE}/{hid}", headers=world.a.headers)
    assert r.status_code == 404
    assert audit_count(conn, "webhook.delete") == 1
