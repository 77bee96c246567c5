"""The alert resource: validation (problem+json naming the field), tenancy (a consumer sees and manages its
own rules; global rules are the admin's), replace/delete, silence, test sends, channels encrypted at rest."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from tests.support.resources import World, audit_count, make_webhook

pytestmark = [pytest.mark.db]

BASE = "/api/whk/monitoring/alerts"
SLACK = "https://hooks.slack.com/services/T0/B0/very-secret-token"


def body(**kw: Any) -> dict[str, Any]:
    b: dict[str, Any] = {
        "name": "orders failing",
        "condition": {"metric": "failure_rate", "operator": ">", "threshold": 0.2, "window_s": 300},
        "channels": [{"type": "slack", "target": SLACK}],
    }
    b.update(kw)
    return b


@pytest.mark.parametrize(
    ("change", "status", "pointer"),
    [
        ({"condition": {"metric": "vibes", "operator": ">", "threshold": 1}}, 400, "/condition/metric"),
        (
            {"condition": {"metric": "failure_rate", "operator": ">", "threshold": 1, "window_s": -60}},
            400,
            "/condition/window_s",
        ),
        ({"channels": [{"type": "carrier-pigeon", "target": "x"}]}, 400, "/channels"),
        (
            {"channels": [{"type": "webhook", "target": "http://169.254.169.254/latest"}]},
            422,
            "/channels/0/target",
        ),
        (
            {"escalation": [{"after_s": 60, "channels": [{"type": "slack", "target": "http://10.0.0.1/x"}]}]},
            422,
            "/escalation/0/channels/0/target",
        ),
        (
            {"channels": [{"type": "email", "target": "a@example.com", "smtp_host": "169.254.169.254"}]},
            422,
            "/channels/0/smtp_host",
        ),
        ({"for_s": -1}, 400, "/for_s"),
        ({"throttle_seconds": 86401}, 400, "/throttle_seconds"),
        (
            {"condition": {"metric": "slo_burn_rate", "operator": ">=", "threshold": 14.4}},
            422,
            "/condition/slo_id",
        ),
    ],
)
async def test_bad_rules_get_problem_json_naming_the_field(
    refusing_client: AsyncTestClient[Any],
    refusing_world: World,
    change: dict[str, Any],
    status: int,
    pointer: str,
):
    r = await refusing_client.post(BASE, json=body(**change), headers=refusing_world.admin)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    pointers = [e.get("pointer", "") for e in r.json().get("errors", [])] or [r.json().get("detail", "")]
    assert any(pointer in p for p in pointers), r.json()


async def test_tenancy_global_rules_are_admin_only(client: AsyncTestClient[Any], world: World, conn):  # type: ignore[no-untyped-def]
    (builtin,) = conn.execute(
        "SELECT id FROM whk.whk_06_alertas WHERE builtin = 'no_live_dispatcher'"
    ).fetchone()
    admin_list = (await client.get(BASE, params={"limit": 200}, headers=world.admin)).json()["items"]
    assert builtin in [a["id"] for a in admin_list]
    assert (await client.get(BASE, headers=world.a.headers)).json()["items"] == []
    for method, path in (
        ("GET", f"{BASE}/{builtin}"),
        ("DELETE", f"{BASE}/{builtin}"),
        ("POST", f"{BASE}/{builtin}/acknowledge"),
        ("POST", f"{BASE}/{builtin}/test"),
        ("GET", f"{BASE}/{builtin}/history"),
    ):
        r = await client.request(method, path, headers=world.a.headers)
        assert r.status_code == 404, (method, path, r.status_code)
    r = await client.post(f"{BASE}/{builtin}/silence", json={"duration_s": 60}, headers=world.a.headers)
    assert r.status_code == 404
    # A consumer may not watch the platform's dispatchers.
    r = await client.post(
        BASE,
        json=body(condition={"metric": "live_dispatchers", "operator": "<", "threshold": 1}),
        headers=world.a.headers,
    )
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/condition/metric"
    # One tenant's rule is invisible to the other.
    mine = (await client.post(BASE, json=body(), headers=world.a.headers)).json()
    assert mine["consumer_id"] == world.a.consumer_id
    assert (await client.get(f"{BASE}/{mine['id']}", headers=world.b.headers)).status_code == 404
    assert (await client.delete(f"{BASE}/{mine['id']}", headers=world.b.headers)).status_code == 404
    assert (await client.get(f"{BASE}/{mine['id']}", headers=world.a.headers)).status_code == 200


async def test_channels_are_encrypted_at_rest_and_masked(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    key = "R0UT1NGKEY0123456789abcd"
    r = await client.post(
        BASE,
        json=body(
            channels=[
                {"type": "slack", "target": SLACK},
                {"type": "pagerduty", "target": key},
                {"type": "webhook", "target": "https://ops.example.com/alerts"},
                {
                    "type": "email",
                    "target": "oncall@example.com",
                    "smtp_host": "smtp.example.com",
                    "smtp_username": "whk",
                    "smtp_password": "hunter2-smtp",
                },
            ]
        ),
        headers=world.admin,
    )
    assert r.status_code == 201, r.text
    shown = r.json()["channels"]
    assert [c["type"] for c in shown] == ["slack", "pagerduty", "webhook", "email"]
    assert shown[0]["display"] == "https://hooks.slack.com/…" and "very-secret" not in r.text
    assert shown[1]["display"] == "routing key …abcd"
    assert shown[2]["secret"].startswith("whsec_")  # generated, shown once
    assert all(c["secret"] is None for c in (shown[0], shown[1], shown[3]))
    again = (await client.get(f"{BASE}/{r.json()['id']}", headers=world.admin)).json()
    assert all(c["secret"] is None for c in again["channels"])
    raw = conn.execute(
        "SELECT target_enc, secret_enc, config::text FROM whk.alert_channels ORDER BY id"
    ).fetchall()
    blob = b"".join(bytes(t) + bytes(s or b"") + c.encode() for t, s, c in raw)
    for plain in (b"very-secret-token", key.encode(), b"hunter2-smtp", shown[2]["secret"].encode()):
        assert plain not in blob
    audit = conn.execute("SELECT after::text FROM whk.audit_log WHERE action = 'alert.create'").fetchone()
    assert audit is not None and "very-secret" not in audit[0] and key not in audit[0]


async def test_replace_silence_test_and_delete(client: AsyncTestClient[Any], world: World, conn):  # type: ignore[no-untyped-def]
    h = make_webhook(conn, world.a.consumer_id)
    created = (
        await client.post(
            BASE,
            json=body(
                condition={
                    "metric": "consecutive_failures",
                    "operator": ">=",
                    "threshold": 5,
                    "webhook_id": h,
                }
            ),
            headers=world.a.headers,
        )
    ).json()
    alert_id = created["id"]
    old_channel = created["channels"][0]["id"]
    replaced = body(
        name="renamed",
        for_s=0,
        channels=[
            {"type": "webhook", "target": "https://ops.example.com/a"},
            {"type": "slack", "target": SLACK},
        ],
        escalation=[
            {"after_s": 600, "channels": [{"type": "pagerduty", "target": "R0UT1NGKEY0123456789abcd"}]}
        ],
    )
    r = await client.put(f"{BASE}/{alert_id}", json=replaced, headers=world.a.headers)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["name"] == "renamed" and got["for_s"] == 0 and len(got["channels"]) == 2
    assert (
        got["escalation"][0]["after_s"] == 600 and got["escalation"][0]["channels"][0]["type"] == "pagerduty"
    )
    # The replaced channel rows are gone.
    assert conn.execute(
        "SELECT count(*) FROM whk.alert_channels WHERE id = %s", [old_channel]
    ).fetchone() == (0,)
    r = await client.post(f"{BASE}/{alert_id}/silence", json={"duration_s": 3600}, headers=world.a.headers)
    assert r.status_code == 200 and r.json()["silenced_until"] is not None
    r = await client.post(f"{BASE}/{alert_id}/silence", json={"duration_s": -1}, headers=world.a.headers)
    assert r.status_code == 400
    r = await client.post(f"{BASE}/{alert_id}/silence", json={"duration_s": 0}, headers=world.a.headers)
    assert r.json()["silenced_until"] is None
    r = await client.post(f"{BASE}/{alert_id}/acknowledge", headers=world.a.headers)
    assert r.status_code == 409  # not firing
    r = await client.post(f"{BASE}/{alert_id}/test", headers=world.a.headers)
    assert r.status_code == 202, r.text
    assert r.json()["queued"] == 3
    jobs = conn.execute(
        "SELECT count(*) FROM whk.pgqueuer WHERE entrypoint = 'notify' AND status = 'queued'"
    ).fetchone()
    assert jobs == (3,)
    hist = (await client.get(f"{BASE}/{alert_id}/history", headers=world.a.headers)).json()["items"]
    assert hist[0]["details"] == {"test": True}
    for action in ("alert.create", "alert.update", "alert.silence", "alert.test"):
        assert audit_count(conn, action) >= 1, action
    assert (await client.delete(f"{BASE}/{alert_id}", headers=world.a.headers)).status_code == 204
    assert (await client.get(f"{BASE}/{alert_id}", headers=world.a.headers)).status_code == 404
    assert conn.execute("SELECT count(*) FROM whk.alert_channels").fetchone() == (0,)


async def test_health_names_a_scheduler_that_stopped_and_the_dashboard_counts_firing(
    client: AsyncTestClient[Any], world: World, conn
):  # type: ignore[no-untyped-def]
    conn.execute("INSERT INTO whk.dispatchers (id, hostname, pid, version) VALUES ('d1', 'host', 1, 'test')")
    conn.execute(
        "INSERT INTO whk.ops_job_runs (job, period_s, worker, started_at, finished_at, ok) "
        "VALUES ('evaluate_alerts', 15, 'w1', now() - interval '40 seconds', "
        "now() - interval '40 seconds', true)"
    )
    h = (await client.get("/api/whk/monitoring/health")).json()
    assert h["status"] == "ok", h["problems"]
    assert h["schedulers"][0]["job"] == "evaluate_alerts" and h["schedulers"][0]["stale"] is False
    conn.execute("UPDATE whk.ops_job_runs SET started_at = now() - interval '46 seconds'")
    h = (await client.get("/api/whk/monitoring/health")).json()
    assert h["status"] == "degraded" and h["schedulers"][0]["stale"] is True
    assert any("scheduler evaluate_alerts has not run for" in p for p in h["problems"])
    conn.execute("UPDATE whk.whk_06_alertas SET state = 'firing' WHERE builtin = 'dead_letters'")
    dash = (await client.get("/api/whk/monitoring/dashboard", headers=world.admin)).json()
    assert dash["firing_alerts"] == 1
    dash = (await client.get("/api/whk/monitoring/dashboard", headers=world.a.headers)).json()
    assert dash["firing_alerts"] == 0  # a global rule is not the tenant's
