"""Quarantine through the API: the webhook resource shows it, health names it (degraded), an admin clears
it (audited; consumers 403; 409 when there is nothing to clear), and health compares the dispatchers'
SSRF policies and shows a dispatcher whose rounds fail."""

from __future__ import annotations

import ipaddress
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from tests.support.delivery import TEST_SECRET, add_secret
from tests.support.resources import World, audit_count, make_delivery, make_webhook
from whk.urlpolicy import policy_fingerprint

pytestmark = pytest.mark.db

BASE = "/api/whk"


def beat(conn: psycopg.Connection[Any], ident: str, exempt: list[str], last_error: str | None = None) -> None:
    """A live dispatcher's heartbeat, as the engine sends it (whk.dispatcher_heartbeat)."""
    policy = policy_fingerprint([ipaddress.ip_network(n) for n in exempt])
    conn.execute(
        "SELECT whk.dispatcher_heartbeat(%s, 'host', 1, 'test', false, 60, %s, %s::text[], %s)",
        (ident, policy, exempt, last_error),
    )


async def test_a_quarantined_webhook_is_shown_named_in_health_and_cleared_by_an_admin(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    beat(conn, "d1", [])
    hook = make_webhook(conn, world.a.consumer_id)
    add_secret(conn, hook, TEST_SECRET)  # as the API creates it: signed, not waiting for a secret
    waiting = make_delivery(conn, hook, status="pending")
    assert (await client.get(f"{BASE}/monitoring/health")).json()["quarantined_webhooks"] == []
    conn.execute(
        "SELECT whk.quarantine_webhook(%s, 'claim', 'integer out of range', '22003', 'whk-dispatcher:d1')",
        (hook,),
    )

    # The owner sees it on the resource, with the database error.
    r = await client.get(f"{BASE}/webhooks/{hook}", headers=world.a.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["quarantined_at"] is not None
    assert (body["quarantine_stage"], body["quarantine_sqlstate"], body["quarantine_reason"]) == (
        "claim",
        "22003",
        "integer out of range",
    )
    assert body["status"] == "active"  # orthogonal to the status

    # Health (no credentials) is degraded and names the webhook.
    h = (await client.get(f"{BASE}/monitoring/health")).json()
    assert h["status"] == "degraded"
    assert h["quarantined_webhooks"] == [hook]
    assert any("quarantined" in p and str(hook) in p for p in h["problems"])

    listed = await client.get(f"{BASE}/webhooks", params={"quarantined": "true"}, headers=world.admin)
    assert [w["id"] for w in listed.json()["items"]] == [hook]
    listed = await client.get(f"{BASE}/webhooks", params={"quarantined": "false"}, headers=world.admin)
    assert hook not in [w["id"] for w in listed.json()["items"]]

    # Only admins clear it.
    r = await client.post(f"{BASE}/webhooks/{hook}/clear-quarantine", headers=world.a.headers)
    assert r.status_code == 403, r.text
    assert audit_count(conn, "webhook.quarantine_cleared") == 0
    r = await client.post(f"{BASE}/webhooks/{hook}/clear-quarantine", headers=world.admin)
    assert r.status_code == 200, r.text
    assert r.json()["quarantined_at"] is None and r.json()["quarantine_reason"] is None
    row = conn.execute(
        "SELECT before ->> 'quarantine_reason', consumer_id FROM whk.audit_log "
        "WHERE action = 'webhook.quarantine_cleared' AND target_id = %s",
        (str(hook),),
    ).fetchone()
    assert row == ("integer out of range", world.a.consumer_id)
    # Its waiting delivery is due now, with a fresh schedule.
    assert conn.execute(
        "SELECT status, next_attempt_at <= now() FROM whk.whk_03_entregas WHERE id = %s", (waiting,)
    ).fetchone() == ("pending", True)
    h = (await client.get(f"{BASE}/monitoring/health")).json()
    assert h["quarantined_webhooks"] == [] and h["status"] == "ok", h["problems"]

    r = await client.post(f"{BASE}/webhooks/{hook}/clear-quarantine", headers=world.admin)
    assert r.status_code == 409 and r.headers["content-type"].startswith("application/problem+json")
    r = await client.post(f"{BASE}/webhooks/999999/clear-quarantine", headers=world.admin)
    assert r.status_code == 404


async def test_resuming_through_the_api_lifts_the_quarantine(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    hook = make_webhook(conn, world.a.consumer_id)
    conn.execute("UPDATE whk.whk_01_webhooks SET status = 'paused' WHERE id = %s", (hook,))
    conn.execute("SELECT whk.quarantine_webhook(%s, 'ssrf', 'ssrf_blocked: loopback')", (hook,))
    r = await client.put(f"{BASE}/webhooks/{hook}", json={"status": "active"}, headers=world.admin)
    assert r.status_code == 200, r.text
    assert r.json()["quarantined_at"] is None


async def test_health_shows_dispatchers_that_disagree_on_the_ssrf_policy(
    client: AsyncTestClient[Any], conn: psycopg.Connection[Any]
):
    beat(conn, "up-1", ["127.0.0.0/8", "::1/128"])
    beat(conn, "up-2", ["127.0.0.0/8", "::1/128"])
    h = (await client.get(f"{BASE}/monitoring/health")).json()
    assert h["status"] == "ok", h["problems"]
    assert {d["ssrf_exempt"] == ["127.0.0.0/8", "::1/128"] for d in h["dispatchers"]} == {True}

    beat(conn, "by-hand", [])
    h = (await client.get(f"{BASE}/monitoring/health")).json()
    assert h["status"] == "degraded"
    differs = {d["id"]: d["ssrf_policy_differs"] for d in h["dispatchers"]}
    assert differs == {"by-hand": True, "up-1": False, "up-2": False}
    [problem] = [p for p in h["problems"] if "SSRF" in p]
    assert "by-hand exempt nothing" in problem and "up-1, up-2 exempt 127.0.0.0/8,::1/128" in problem

    # A dispatcher that is gone no longer counts.
    conn.execute("UPDATE whk.dispatchers SET heartbeat_at = now() - interval '1 day' WHERE id = 'by-hand'")
    h = (await client.get(f"{BASE}/monitoring/health")).json()
    assert not any("SSRF" in p for p in h["problems"])


async def test_health_shows_a_dispatcher_whose_rounds_fail(
    client: AsyncTestClient[Any], conn: psycopg.Connection[Any]
):
    beat(conn, "d1", [], last_error="claim: 22003 integer out of range")
    h = (await client.get(f"{BASE}/monitoring/health")).json()
    assert h["status"] == "degraded"
    assert "dispatcher d1 is failing: claim: 22003 integer out of range" in h["problems"]
    assert h["dispatchers"][0]["last_error_at"] is not None
    beat(conn, "d1", [])
    h = (await client.get(f"{BASE}/monitoring/health")).json()
    assert h["status"] == "ok" and h["dispatchers"][0]["last_error"] is None
