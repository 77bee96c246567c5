"""Monitoring resource: health without credentials, dashboard, Prometheus/JSON metrics and alerts,
all computed from the tables."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from ops.alerting.evaluate import Evaluator
from tests.support.resources import World, audit_count, make_delivery, make_webhook
from whk.db import configure_json

pytestmark = pytest.mark.db

BASE = "/api/whk/monitoring"


async def test_health_needs_no_credentials_and_reports_dispatchers(
    client: AsyncTestClient[Any], conn: psycopg.Connection[Any]
):
    r = await client.get(f"{BASE}/health")
    assert r.status_code == 200, r.text
    h = r.json()
    assert h["database"] == "ok" and h["schema_version"] == h["expected_schema_version"]
    assert h["status"] == "degraded" and h["dispatchers_alive"] == 0  # nobody is delivering
    conn.execute("INSERT INTO whk.dispatchers (id, hostname, pid, version) VALUES ('d1', 'host', 1, 'test')")
    h = (await client.get(f"{BASE}/health")).json()
    assert h["status"] == "ok" and h["dispatchers_alive"] == 1 and h["dispatchers"][0]["id"] == "d1"
    conn.execute("UPDATE whk.dispatchers SET heartbeat_at = now() - interval '1 day'")
    h = (await client.get(f"{BASE}/health")).json()
    assert h["status"] == "degraded" and h["dispatchers"][0]["alive"] is False
    assert (await client.get(f"{BASE}/dashboard")).status_code == 401


async def test_health_reports_old_pending_work(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    conn.execute("INSERT INTO whk.dispatchers (id, hostname, pid, version) VALUES ('d1', 'host', 1, 'test')")
    h = make_webhook(conn, world.a.consumer_id)
    d = make_delivery(conn, h, status="pending")
    conn.execute(
        "UPDATE whk.delivery_queue SET next_attempt_at = now() - interval '1 hour' WHERE id = %s", (d,)
    )
    body = (await client.get(f"{BASE}/health")).json()
    assert body["status"] == "degraded"
    assert body["oldest_due_delivery_age_s"] >= 3600
    assert any("due delivery" in p for p in body["problems"])


async def test_dashboard_and_metrics(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    h = make_webhook(conn, world.a.consumer_id)
    make_delivery(conn, h, status="dead", attempts=2)
    make_delivery(conn, h, status="delivered", attempts=1)
    hb = make_webhook(conn, world.b.consumer_id)
    make_delivery(conn, hb, status="dead", attempts=1)
    r = await client.get(f"{BASE}/dashboard", headers=world.a.headers)
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["deliveries_by_status"] == {"dead": 1, "delivered": 1}
    assert d["top_failing_webhooks"][0]["webhook_id"] == h
    assert len(d["recent_dead_letters"]) == 1
    assert d["success_rate_last_hour"] == pytest.approx(1 / 3, rel=1e-3)
    assert d["outbox_pending"] is None  # platform-wide numbers are for admins
    r = await client.get(f"{BASE}/dashboard", headers=world.admin)
    assert r.json()["deliveries_by_status"] == {"dead": 2, "delivered": 1}
    r = await client.get(f"{BASE}/metrics", headers=world.admin)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "whk_dead_letters_24h 2.0" in text
    assert 'whk_deliveries_open{status="pending"} 0.0' in text
    assert "whk_dispatchers_alive 0.0" in text
    assert 'whk_attempts_5m{outcome="retry"}' in text
    r = await client.get(f"{BASE}/metrics", params={"format": "json"}, headers=world.a.headers)
    assert r.json()["dead_letters_24h"] == 1
    assert "outbox_pending" not in r.json()


async def test_alerts_create_list_and_evaluate(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    h = make_webhook(conn, world.a.consumer_id)
    make_delivery(conn, h, status="dead", attempts=2)
    make_delivery(conn, h, status="delivered", attempts=1)
    body = {
        "name": "orders failing",
        "severity": "critical",
        "condition": {
            "metric": "failure_rate",
            "operator": ">",
            "threshold": 0.2,
            "window_s": 600,
            "webhook_id": h,
        },
        "channels": [{"type": "email", "target": "ops@example.com"}],
    }
    r = await client.post(f"{BASE}/alerts", json=body, headers=world.a.headers)
    assert r.status_code == 201, r.text
    alert = r.json()
    assert alert["consumer_id"] == world.a.consumer_id
    # Not evaluated yet: the worker writes the value and the state (no on-read guess).
    assert alert["current_value"] is None and alert["breaching"] is None and alert["state"] == "ok"
    assert alert["channels"] == [
        {"id": alert["channels"][0]["id"], "type": "email", "display": "ops@example.com", "secret": None}
    ]
    assert audit_count(conn, "alert.create") == 1
    # One evaluation, as the worker runs it: 2 failed attempts of 3 in the window, for_s 60 -> pending.
    async with await psycopg.AsyncConnection.connect(conn.info.dsn, autocommit=True) as aconn:
        configure_json(aconn)
        await Evaluator(lease_s=60, rollup_horizon_s=600).evaluate(aconn)
    alert = (await client.get(f"{BASE}/alerts/{alert['id']}", headers=world.a.headers)).json()
    assert alert["current_value"] == pytest.approx(2 / 3) and alert["breaching"] is True
    assert alert["state"] == "pending"
    r = await client.get(f"{BASE}/alerts", headers=world.a.headers)
    assert [a["id"] for a in r.json()["items"]] == [alert["id"]]
    assert (await client.get(f"{BASE}/alerts", headers=world.b.headers)).json()["items"] == []
    r = await client.get(f"{BASE}/alerts", params={"breaching_only": True}, headers=world.a.headers)
    assert len(r.json()["items"]) == 1
    assert (await client.get(f"{BASE}/alerts/{alert['id']}", headers=world.b.headers)).status_code == 404
    bad = {**body, "channels": [{"type": "slack", "target": "http://169.254.169.254/x"}]}
    r = await client.post(f"{BASE}/alerts", json=bad, headers=world.a.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/channels/0/target"
    hb = make_webhook(conn, world.b.consumer_id)
    foreign = {**body, "condition": {**body["condition"], "webhook_id": hb}}
    r = await client.post(f"{BASE}/alerts", json=foreign, headers=world.a.headers)
    assert r.status_code == 404  # another tenant's webhook, named in the body
