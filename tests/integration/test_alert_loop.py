"""The operations loop end to end: a real dispatcher delivering to a receiver that answers 500, the
operations worker (pgqueuer schedules and jobs) evaluating the rules, and recording receivers for every
channel format (Slack, PagerDuty Events v2, a Standard Webhooks signed webhook, e-mail over real SMTP)."""

from __future__ import annotations

import json

import pytest
from standardwebhooks.webhooks import Webhook

from tests.support.delivery import emit, make_consumer, make_webhook
from tests.support.dispatch import compress_schedule, running
from tests.support.ops import (
    alert_row,
    channel,
    disable_builtins,
    history,
    ops_settings,
    rule,
    smtp_server,
    worker,
)
from tests.support.receiver import Reply, receiver, wait_until

pytestmark = [pytest.mark.db]
__all__ = ["receiver"]

ALERT_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="
ROUTING_KEY = "R0UT1NGKEY0123456789abcd"
SLACK_PATH = "/services/T000/B000/XXXXXXXX"


def _state(conn, alert_id):  # type: ignore[no-untyped-def]
    return alert_row(conn, alert_id)["state"]


async def test_failure_rate_fires_once_on_every_channel_then_resolves(db_url, conn, receiver):
    disable_builtins(conn)
    compress_schedule(conn, [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2])
    receiver.on("/orders", default=Reply(status=500))
    receiver.on("/v2/enqueue", default=Reply(status=202, body=b'{"status":"success"}'))
    receiver.on(SLACK_PATH, default=Reply(status=200, body=b"ok"))
    c = make_consumer(conn)
    hook = make_webhook(conn, c, receiver.url("/orders"), ["order.*"])
    with smtp_server() as smtp:
        channels = [
            channel(conn, "slack", "https://hooks.slack.com" + SLACK_PATH),
            channel(conn, "pagerduty", ROUTING_KEY),
            channel(conn, "webhook", receiver.url("/alert-hook"), secret=ALERT_SECRET),
            channel(
                conn,
                "email",
                "oncall@example.com",
                secret="smtp-pass",
                config={
                    "smtp_host": "127.0.0.1",
                    "smtp_port": smtp.port,
                    "smtp_username": "whk",
                    "smtp_from": "whk@example.com",
                },
            ),
        ]
        alert = rule(
            conn,
            {"metric": "failure_rate", "operator": ">", "threshold": 0.5, "window_s": 60, "webhook_id": hook},
            channels=channels,
            for_s=2,
            throttle_s=3600,
            name="orders failing",
        )
        settings = ops_settings(
            db_url,
            WHK_PAGERDUTY_EVENTS_URL=receiver.url("/v2/enqueue"),
            WHK_SLACK_BASE_URL=receiver.base_url,
        )
        async with worker(settings), running(settings):
            emit(conn, "order.created", {"n": 1}, count=3)
            # pending first (the condition holds but not yet for 2 s), then firing.
            assert await wait_until(lambda: _state(conn, alert) == "pending", 20)
            assert _state(conn, alert) == "pending"
            assert await wait_until(lambda: _state(conn, alert) == "firing", 20)
            assert await wait_until(
                lambda: (
                    len(receiver.to("/alert-hook")) >= 1
                    and len(receiver.to(SLACK_PATH)) >= 1
                    and len(receiver.to("/v2/enqueue")) >= 1
                    and len(smtp.messages) >= 1
                ),
                20,
            )
            (h,) = history(conn, alert)
            assert await wait_until(lambda: len(history(conn, alert)[0]["notified"]) == 4, 10)
            # Stay down for a few more evaluations: nothing more inside throttle_seconds.
            runs = conn.execute(
                "SELECT count(*) FROM whk.ops_job_runs WHERE job = 'evaluate_alerts'"
            ).fetchone()
            assert runs is not None
            assert await wait_until(
                lambda: (
                    conn.execute(
                        "SELECT count(*) FROM whk.ops_job_runs WHERE job = 'evaluate_alerts' AND ok"
                    ).fetchone()[0]
                    >= runs[0] + 3
                ),
                20,
            )
            assert _state(conn, alert) == "firing"
            assert len(receiver.to("/alert-hook")) == 1
            assert len(receiver.to(SLACK_PATH)) == 1
            assert len(receiver.to("/v2/enqueue")) == 1
            assert len(smtp.messages) == 1

            # Standard Webhooks, verified with the reference package.
            (req,) = receiver.to("/alert-hook")
            event = Webhook(ALERT_SECRET).verify(req.body, req.headers)
            assert event["type"] == "whk.alert.firing"
            assert event["data"]["alert_id"] == alert and event["data"]["history_id"] == h["id"]
            assert event["data"]["metric"] == "failure_rate" and event["data"]["value"] > 0.5
            # Slack incoming webhook: text + blocks.
            slack = json.loads(receiver.to(SLACK_PATH)[0].body)
            assert slack["text"].startswith("[FIRING] orders failing: failure_rate")
            assert slack["blocks"][0]["type"] == "header"
            assert {b["type"] for b in slack["blocks"]} >= {"header", "section", "context"}
            # PagerDuty Events API v2 trigger.
            pd = json.loads(receiver.to("/v2/enqueue")[0].body)
            assert pd["routing_key"] == ROUTING_KEY
            assert pd["event_action"] == "trigger"
            assert pd["dedup_key"] == f"whk-alert-{alert}"
            assert pd["payload"]["severity"] == "critical" and pd["payload"]["source"] == "whk"
            assert pd["payload"]["summary"].startswith("[FIRING] orders failing")
            # E-mail through real SMTP, authenticated with the decrypted password.
            (mail,) = smtp.messages
            assert mail["To"] == "oncall@example.com"
            assert mail["Subject"].startswith("[WHK] [FIRING] orders failing")
            assert smtp.logins == [("whk", "smtp-pass")]

            (h,) = history(conn, alert)
            assert h["resolved_at"] is None and h["value"] > 0.5
            sent = {(n["type"], n["kind"], n["status"]) for n in h["notified"]}
            assert sent == {(t, "trigger", "sent") for t in ("slack", "pagerduty", "webhook", "email")}
            assert alert_row(conn, alert)["trigger_count"] == 1

            # The endpoint recovers: new deliveries succeed, the failure rate of the window drops.
            receiver.defaults["/orders"] = Reply(status=200)
            conn.execute("DELETE FROM whk.kpi_webhook_minute")  # the window restarts from the recovery
            conn.execute("DELETE FROM whk.whk_03_entregas_tentativas")
            emit(conn, "order.created", {"n": 2}, count=3)
            assert await wait_until(lambda: _state(conn, alert) == "resolved", 30)
            assert await wait_until(lambda: len(receiver.to("/v2/enqueue")) == 2, 10)
        resolve = json.loads(receiver.to("/v2/enqueue")[1].body)
        assert resolve["event_action"] == "resolve"
        assert resolve["dedup_key"] == pd["dedup_key"]
        assert "payload" not in resolve
        (h,) = history(conn, alert)
        assert h["resolved_at"] is not None
