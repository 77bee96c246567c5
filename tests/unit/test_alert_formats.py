"""Notification bodies against their published formats (pure): Slack incoming webhooks, PagerDuty Events
API v2, the Standard Webhooks event, e-mail; and the operations settings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ops.notify import formats
from whk.errors import SettingsError
from whk.notice import Notice, decode_notice, encode_notice
from whk.settings import load_settings

AT = datetime(2026, 12, 7, 10, 20, tzinfo=UTC)


def notice(**kw) -> Notice:  # type: ignore[no-untyped-def]
    base = {
        "alert_id": 7,
        "history_id": 31,
        "channel_id": 2,
        "kind": "trigger",
        "name": "orders failing",
        "severity": "critical",
        "metric": "failure_rate",
        "operator": ">",
        "threshold": 0.5,
        "value": 0.75,
        "consumer_id": 3,
        "at": AT,
    }
    base.update(kw)
    return Notice(**base)


def test_notice_round_trips_and_keys_are_stable():
    n = notice()
    assert decode_notice(encode_notice(n)) == n
    assert n.dedupe_key == "notify:7:31:trigger:0:2"
    assert n.message_id == "msg_alert_7_31_trigger_0_2"
    # reminders and tests are per instant, so a later one is not taken for the earlier
    assert notice(kind="repeat").dedupe_key != notice(kind="repeat", at=AT.replace(minute=21)).dedupe_key


def test_slack_text_and_blocks():
    body = formats.slack_body(notice(description="the orders endpoint answers 500"))
    assert body["text"] == "[FIRING] orders failing: failure_rate 0.75 > 0.5"
    types = [b["type"] for b in body["blocks"]]
    assert types == ["header", "section", "section", "context"]
    header = body["blocks"][0]["text"]
    assert header["type"] == "plain_text" and len(header["text"]) <= 150
    assert all(f["type"] == "mrkdwn" for f in body["blocks"][1]["fields"])
    assert len(body["blocks"][1]["fields"]) <= 10
    long = formats.slack_body(notice(name="x" * 300))
    assert len(long["blocks"][0]["text"]["text"]) == 150


@pytest.mark.parametrize(
    ("kind", "action"),
    [
        ("trigger", "trigger"),
        ("repeat", "trigger"),
        ("escalate", "trigger"),
        ("test", "trigger"),
        ("acknowledge", "acknowledge"),
        ("resolve", "resolve"),
    ],
)
def test_pagerduty_events_v2(kind, action):
    body = formats.pagerduty_body(notice(kind=kind), "R0UT1NGKEY0123456789abcd")
    assert body["routing_key"] == "R0UT1NGKEY0123456789abcd"
    assert body["event_action"] == action
    assert body["dedup_key"] == "whk-alert-7"  # the same for every event of the rule
    if action == "trigger":
        p = body["payload"]
        assert {"summary", "source", "severity"} <= set(p)
        assert p["severity"] in {"critical", "error", "warning", "info"}
        assert 1 <= len(p["summary"]) <= 1024
        datetime.fromisoformat(p["timestamp"])
    else:
        assert set(body) == {"routing_key", "event_action", "dedup_key"}


def test_pagerduty_severity_maps_and_no_value():
    body = formats.pagerduty_body(notice(severity="info", value=None), "k" * 20)
    assert body["payload"]["severity"] == "info"
    assert "no data" in body["payload"]["summary"]


def test_webhook_event_types():
    assert formats.webhook_body(notice())["type"] == "whk.alert.firing"
    assert formats.webhook_body(notice(kind="escalate", step=2))["data"]["escalation_step"] == 2
    assert formats.webhook_body(notice(kind="resolve"))["type"] == "whk.alert.resolved"
    assert formats.webhook_body(notice(kind="acknowledge"))["type"] == "whk.alert.acknowledged"
    assert formats.webhook_body(notice(kind="test"))["type"] == "whk.alert.test"
    assert formats.webhook_body(notice())["timestamp"] == AT.isoformat()


def test_email_message():
    msg = formats.email_message(notice(kind="resolve"), sender="whk@example.com", to="oncall@example.com")
    assert msg["Subject"] == "[WHK] [RESOLVED] orders failing: failure_rate 0.75 > 0.5"
    assert msg["From"] == "whk@example.com" and msg["To"] == "oncall@example.com"
    assert "alert_id: 7" in msg.get_content()


@pytest.mark.parametrize(
    ("every", "cron"), [("15", "* * * * * */15"), ("1", "* * * * * */1"), ("60", "* * * * * 0")]
)
def test_eval_schedule_is_croniter_seconds(every, cron):
    assert load_settings({"WHK_ALERT_EVAL_EVERY_S": every}).ops.eval_cron == cron


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WHK_ALERT_EVAL_EVERY_S", "7"),
        ("WHK_ALERT_EVAL_EVERY_S", "0"),
        ("WHK_NOTIFY_MAX_ATTEMPTS", "0"),
        ("WHK_KPI_ROLLUP_HORIZON_S", "30"),
        ("WHK_PAGERDUTY_EVENTS_URL", "ftp://x"),
        ("WHK_SLACK_BASE_URL", "x"),
    ],
)
def test_bad_ops_settings_are_refused(name, value):
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})
