"""The operations loop end to end: a real dispatcher delivering to a receiver that answers 500, the
operations worker (pgqueuer schedules and jobs) evaluating the rules, and recording receivers for every
channel format (Slack, PagerDuty Events v2, a Standard Webhooks signed webhook, e-mail over real SMTP)."""

from __future__ import annotations

import json

import pytest
from litestar.testing import AsyncTestClient
from standardwebhooks.webhooks import Webhook

from api.app import create_app
from tests.support.api_platform import admin_key, bearer
from tests.support.delivery import TEST_SECRET_KEYS, emit, make_consumer, make_webhook
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
from tests.support.resources import make_delivery

pytestmark = [pytest.mark.db]
__all__ = ["receiver"]

ALERT_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="
ROUTING_KEY = "R0UT1NGKEY0123456789abcd"
SLACK_PATH = "/services/T000/B000/XXXXXXXX"


def _state(conn, alert_id):  # type: ignore[no-untyped-def]
    return alert_row(conn, alert_id)["state"]


@pytest.mark.slow  # runs the alert loop against five real channels until fire and resolve
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


def _runs(conn) -> int:  # type: ignore[no-untyped-def]
    row = conn.execute(
        "SELECT count(*) FROM whk.ops_job_runs WHERE job = 'evaluate_alerts' AND ok"
    ).fetchone()
    return int(row[0])


async def _more_runs(conn, n: int) -> bool:  # type: ignore[no-untyped-def]
    start = _runs(conn)
    return await wait_until(lambda: _runs(conn) >= start + n, 30)


def _fail(conn, hook: int, deliveries: int = 2) -> None:  # type: ignore[no-untyped-def]
    for _ in range(deliveries):
        make_delivery(conn, hook, status="dead", attempts=3)


@pytest.mark.slow  # waits out two escalation steps (3 s and 12 s) by design
async def test_throttle_escalation_and_acknowledge(db_url, conn, receiver):
    """Stays down: no second page inside throttle_seconds; escalation after after_s; acknowledge stops it."""
    disable_builtins(conn)
    receiver.on("/v2/enqueue", default=Reply(status=202, body=b'{"status":"success"}'))
    c = make_consumer(conn)
    hook = make_webhook(conn, c, "https://example.com/orders", ["order.*"])
    page = channel(conn, "pagerduty", ROUTING_KEY)
    base = channel(conn, "webhook", receiver.url("/base"), secret=ALERT_SECRET)
    step1 = channel(conn, "webhook", receiver.url("/step1"), secret=ALERT_SECRET)
    step2 = channel(conn, "webhook", receiver.url("/step2"), secret=ALERT_SECRET)
    alert = rule(
        conn,
        {"metric": "failure_rate", "operator": ">", "threshold": 0.5, "window_s": 300, "webhook_id": hook},
        channels=[page, base],
        escalation=[
            {"after_s": 3, "channels": [{"channel_id": step1}]},
            {"after_s": 12, "channels": [{"channel_id": step2}]},
        ],
        for_s=0,
        throttle_s=3600,
    )
    settings = ops_settings(db_url, WHK_PAGERDUTY_EVENTS_URL=receiver.url("/v2/enqueue"))
    admin = admin_key(conn)
    async with worker(settings), AsyncTestClient(app=create_app(settings)) as api:
        _fail(conn, hook)
        assert await wait_until(lambda: _state(conn, alert) == "firing", 20)
        assert await wait_until(lambda: len(receiver.to("/step1")) == 1, 20)
        # The escalation went out after after_s; the base channels were paged once only (throttle).
        assert len(receiver.to("/base")) == 1 and len(receiver.to("/v2/enqueue")) == 1
        first = Webhook(ALERT_SECRET).verify(receiver.to("/step1")[0].body, receiver.to("/step1")[0].headers)
        assert first["type"] == "whk.alert.escalated" and first["data"]["escalation_step"] == 1
        r = await api.post(f"/api/whk/monitoring/alerts/{alert}/acknowledge", headers=bearer(admin))
        assert r.status_code == 200, r.text
        assert r.json()["acknowledged_at"] is not None
        again = await api.post(f"/api/whk/monitoring/alerts/{alert}/acknowledge", headers=bearer(admin))
        assert again.status_code == 409
        # Every channel paged so far hears of the acknowledgement once; PagerDuty gets `acknowledge`.
        assert await wait_until(lambda: len(receiver.to("/v2/enqueue")) == 2, 20)
        ack = json.loads(receiver.to("/v2/enqueue")[1].body)
        assert ack["event_action"] == "acknowledge" and ack["dedup_key"] == f"whk-alert-{alert}"
        assert await wait_until(
            lambda: len(receiver.to("/base")) == 2 and len(receiver.to("/step1")) == 2, 20
        )
        told = Webhook(ALERT_SECRET).verify(receiver.to("/base")[1].body, receiver.to("/base")[1].headers)
        assert told["type"] == "whk.alert.acknowledged"
        # Past the second step's after_s: the acknowledged alert does not escalate further.
        firing_since = conn.execute(
            "SELECT firing_since FROM whk.whk_06_alertas WHERE id = %s", [alert]
        ).fetchone()[0]
        assert await wait_until(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM whk.ops_job_runs WHERE job = 'evaluate_alerts' AND ok "
                    "AND started_at > %s + interval '13 seconds'",
                    [firing_since],
                ).fetchone()[0]
                >= 2
            ),
            40,
        )
        assert receiver.to("/step2") == []
        assert _state(conn, alert) == "firing"
        assert len(receiver.to("/base")) == 2 and len(receiver.to("/v2/enqueue")) == 2
        hist = (await api.get(f"/api/whk/monitoring/alerts/{alert}/history", headers=bearer(admin))).json()
        (h,) = hist["items"]
        assert h["acknowledged_at"] is not None and h["resolved_at"] is None
        kinds = sorted((n["kind"], n["channel_id"]) for n in h["notified"] if n["status"] == "sent")
        assert kinds == sorted(
            [
                ("trigger", page),
                ("trigger", base),
                ("escalate", step1),
                ("acknowledge", page),
                ("acknowledge", base),
                ("acknowledge", step1),
            ]
        )


@pytest.mark.slow  # waits out a channel's retries by design
async def test_a_channel_down_is_retried_then_failed_and_others_are_unaffected(db_url, conn, receiver):
    disable_builtins(conn)
    receiver.on("/down", default=Reply(status=500, body=b"boom"))
    c = make_consumer(conn)
    hook = make_webhook(conn, c, "https://example.com/orders", ["order.*"])
    down = channel(conn, "webhook", receiver.url("/down"), secret=ALERT_SECRET)
    up = channel(conn, "slack", receiver.url(SLACK_PATH))
    alert = rule(
        conn,
        {"metric": "failure_rate", "operator": ">", "threshold": 0.5, "window_s": 300, "webhook_id": hook},
        channels=[down, up],
        for_s=0,
        throttle_s=3600,
    )
    async with worker(ops_settings(db_url)):
        _fail(conn, hook)
        assert await wait_until(lambda: _state(conn, alert) == "firing", 20)

        def settled() -> bool:
            notified = history(conn, alert)[0]["notified"]
            return any(n["status"] == "failed" for n in notified) and any(
                n["status"] == "sent" for n in notified
            )

        assert await wait_until(settled, 30)
        assert await _more_runs(conn, 2)
    # WHK_NOTIFY_MAX_ATTEMPTS=3: three requests to the channel that is down, one to the one that is up.
    assert len(receiver.to("/down")) == 3
    assert len(receiver.to(SLACK_PATH)) == 1
    (h,) = history(conn, alert)
    by_channel = {n["channel_id"]: n for n in h["notified"]}
    assert by_channel[down]["status"] == "failed" and by_channel[down]["attempts"] == 3
    assert "http 500" in by_channel[down]["error"]
    assert by_channel[up]["status"] == "sent" and by_channel[up]["attempts"] == 1
    assert _state(conn, alert) == "firing"  # the rule keeps its state
    failed = conn.execute(
        "SELECT count(*) FROM whk.pgqueuer WHERE entrypoint = 'notify' AND status = 'failed'"
    ).fetchone()
    assert failed == (1,)  # held for `whk jobs`


async def test_a_channel_refused_by_the_ssrf_policy_at_send_time_fails_at_once(db_url, conn, receiver):
    """A URL stored behind the API's back (or a name that now resolves inside the network) is checked again
    when sent: refused, not retried, recorded; the other channel still gets its page."""
    disable_builtins(conn)
    c = make_consumer(conn)
    hook = make_webhook(conn, c, "https://example.com/orders", ["order.*"])
    inside = channel(conn, "webhook", "http://10.1.2.3/steal", secret=ALERT_SECRET)
    metadata = channel(conn, "slack", "http://169.254.169.254/latest/meta-data")
    ok = channel(conn, "webhook", receiver.url("/ok"), secret=ALERT_SECRET)
    alert = rule(
        conn,
        {"metric": "failure_rate", "operator": ">", "threshold": 0.5, "window_s": 300, "webhook_id": hook},
        channels=[inside, metadata, ok],
        for_s=0,
    )
    async with worker(ops_settings(db_url)):
        _fail(conn, hook)
        assert await wait_until(
            lambda: len(history(conn, alert)) == 1 and len(history(conn, alert)[0]["notified"]) == 3, 30
        )
    by_channel = {n["channel_id"]: n for n in history(conn, alert)[0]["notified"]}
    for refused in (inside, metadata):
        assert by_channel[refused]["status"] == "failed" and by_channel[refused]["attempts"] == 1
        assert "SSRF policy" in by_channel[refused]["error"]
    assert by_channel[ok]["status"] == "sent"
    assert len(receiver.to("/ok")) == 1


def test_whk_secrets_rotate_re_encrypts_alert_channels(conn):
    from whk.alertchannels import open_channel
    from whk.secretbox import SecretBox, rotate_secrets

    ident = channel(
        conn, "email", "oncall@example.com", secret="smtp-pass", config={"smtp_host": "127.0.0.1"}
    )
    new = SecretBox.from_spec("new1:" + "A" * 43 + "=," + TEST_SECRET_KEYS)
    report = rotate_secrets(conn, new)
    assert report.failed == () and report.rotated >= 2
    target_enc, secret_enc = conn.execute(
        "SELECT target_enc, secret_enc FROM whk.alert_channels WHERE id = %s", [ident]
    ).fetchone()
    assert (
        SecretBox.key_id_of(bytes(target_enc)) == "new1" and SecretBox.key_id_of(bytes(secret_enc)) == "new1"
    )
    assert open_channel(new, ident, target_enc, secret_enc) == ("oncall@example.com", "smtp-pass")


@pytest.mark.slow  # runs the alert loop until fire and resolve, twice
async def test_a_firing_rule_disabled_or_deleted_resolves_its_pages(db_url, conn, receiver):
    disable_builtins(conn)
    receiver.on("/v2/enqueue", default=Reply(status=202, body=b'{"status":"success"}'))
    c = make_consumer(conn)
    hook = make_webhook(conn, c, "https://example.com/orders", ["order.*"])
    cond = {"metric": "failure_rate", "operator": ">", "threshold": 0.5, "window_s": 300, "webhook_id": hook}
    first = rule(conn, cond, channels=[channel(conn, "pagerduty", ROUTING_KEY)], for_s=0, name="first")
    second = rule(conn, cond, channels=[channel(conn, "pagerduty", ROUTING_KEY)], for_s=0, name="second")
    settings = ops_settings(db_url, WHK_PAGERDUTY_EVENTS_URL=receiver.url("/v2/enqueue"))
    admin = bearer(admin_key(conn))
    async with worker(settings), AsyncTestClient(app=create_app(settings)) as api:
        _fail(conn, hook)
        assert await wait_until(lambda: len(receiver.to("/v2/enqueue")) == 2, 20)
        # Disabled while firing: the next evaluation resolves it.
        conn.execute("UPDATE whk.whk_06_alertas SET enabled = false WHERE id = %s", [first])
        assert await wait_until(lambda: _state(conn, first) == "resolved", 20)
        # Deleted while firing: its resolve goes out, to the channel it paged, kept for that.
        r = await api.delete(f"/api/whk/monitoring/alerts/{second}", headers=admin)
        assert r.status_code == 204
        assert await wait_until(lambda: len(receiver.to("/v2/enqueue")) == 4, 20)
    events = [json.loads(r.body) for r in receiver.to("/v2/enqueue")]
    assert sorted((e["dedup_key"], e["event_action"]) for e in events) == sorted(
        [(f"whk-alert-{a}", act) for a in (first, second) for act in ("trigger", "resolve")]
    )


async def test_housekeeping_forgets_only_unreferenced_channels(conn, aconn):
    from ops.repository import OpsRepository

    referenced = channel(conn, "slack", "https://hooks.slack.com/services/a")
    stepped = channel(conn, "slack", "https://hooks.slack.com/services/b")
    paged = channel(conn, "slack", "https://hooks.slack.com/services/c")
    queued = channel(conn, "slack", "https://hooks.slack.com/services/d")
    orphan = channel(conn, "slack", "https://hooks.slack.com/services/e")
    young = channel(conn, "slack", "https://hooks.slack.com/services/f")
    alert = rule(
        conn,
        {"metric": "failure_rate", "operator": ">", "threshold": 0.5},
        channels=[referenced],
        escalation=[{"after_s": 60, "channels": [{"channel_id": stepped}]}],
    )
    conn.execute("UPDATE whk.whk_06_alertas SET paged_channels = %s WHERE id = %s", [[paged], alert])
    conn.execute(
        "SELECT whk.enqueue_notice(convert_to(%s, 'UTF8'), 'k')", [json.dumps({"channel_id": queued})]
    )
    conn.execute(
        "UPDATE whk.alert_channels SET created_at = now() - interval '2 hours' WHERE id <> %s", [young]
    )
    repo = OpsRepository()
    assert await repo.forget_channels(aconn) == 1
    await repo.create_partitions(aconn)
    await repo.forget_runs(aconn)
    left = {r[0] for r in conn.execute("SELECT id FROM whk.alert_channels").fetchall()}
    assert left == {referenced, stepped, paged, queued, young}
    assert orphan not in left


async def test_inline_channels_of_older_rules_are_sealed_into_encrypted_rows(conn, aconn):
    from ops.repository import OpsRepository
    from tests.support.delivery import TEST_BOX
    from whk.alertchannels import open_channel

    (alert,) = conn.execute(
        "INSERT INTO whk.whk_06_alertas (name, condition, channels, escalation) VALUES ('old', %s, %s, %s) "
        "RETURNING id",
        [
            json.dumps({"metric": "failure_rate", "operator": ">", "threshold": 0.2}),
            json.dumps([{"type": "pagerduty", "target": ROUTING_KEY}]),
            json.dumps(
                [{"after_s": 600, "channels": [{"type": "slack", "target": "https://hooks.slack.com/x/y"}]}]
            ),
        ],
    ).fetchone()
    assert await OpsRepository().seal_legacy_channels(aconn, TEST_BOX) == 1
    assert await OpsRepository().seal_legacy_channels(aconn, TEST_BOX) == 0  # done once
    channels, escalation, text = conn.execute(
        "SELECT channels, escalation, channels::text || escalation::text "
        "FROM whk.whk_06_alertas WHERE id = %s",
        [alert],
    ).fetchone()
    assert ROUTING_KEY not in text and "hooks.slack.com" not in text
    (pd,) = channels
    (step,) = escalation
    assert step["after_s"] == 600
    rows = {
        r[0]: open_channel(TEST_BOX, r[0], r[1], r[2])[0]
        for r in conn.execute("SELECT id, target_enc, secret_enc FROM whk.alert_channels").fetchall()
    }
    assert rows == {
        pd["channel_id"]: ROUTING_KEY,
        step["channels"][0]["channel_id"]: "https://hooks.slack.com/x/y",
    }
