"""The operations worker's own /metrics: served on WHK_WORKER_METRICS_PORT, parsed by prometheus_client's
parser, and after one alert firing on three channels (two accept, one refuses until the worker gives up)
the notification counters are exactly those known events."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.api_platform import free_port
from tests.support.delivery import make_consumer
from tests.support.ops import channel, disable_builtins, history, ops_settings, rule, worker
from tests.support.receiver import Receiver, Reply, receiver, wait_until
from tests.support.resources import make_delivery, make_webhook

pytestmark = [pytest.mark.db]
__all__ = ["receiver"]

ALERT_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="
SLACK_PATH = "/services/T000/B000/XXXXXXXX"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def notified(conn: psycopg.Connection[Any], alert: int, n: int) -> bool:
    rows = history(conn, alert)
    return bool(rows) and len(rows[0]["notified"] or []) == n


async def test_notifications_are_counted_by_the_worker_that_sends_them(
    db_url: str, conn: psycopg.Connection[Any], receiver: Receiver
) -> None:
    port = free_port()
    settings = ops_settings(
        db_url,
        WHK_WORKER_METRICS_PORT=str(port),
        WHK_NOTIFY_MAX_ATTEMPTS="2",
        WHK_SLACK_BASE_URL=receiver.base_url,
    )
    receiver.on("/ok", default=Reply(status=204))
    receiver.on("/down", default=Reply(status=500))
    receiver.on(SLACK_PATH, default=Reply(status=200, body=b"ok"))
    disable_builtins(conn)
    acme = make_consumer(conn, "acme")
    hook = make_webhook(conn, acme)
    make_delivery(conn, hook, status="dead", attempts=3)  # a failure rate of 1
    channels = [
        channel(conn, "webhook", receiver.url("/ok"), secret=ALERT_SECRET),
        channel(conn, "webhook", receiver.url("/down"), secret=ALERT_SECRET),
        channel(conn, "slack", "https://hooks.slack.com" + SLACK_PATH),
    ]
    alert = rule(
        conn,
        {"metric": "failure_rate", "operator": ">", "threshold": 0.5, "window_s": 300, "webhook_id": hook},
        channels=channels,
        throttle_s=3600,
    )
    async with worker(settings):
        # two sent, one failed for good after 2 attempts: three entries in the activation's history
        assert await wait_until(lambda: notified(conn, alert, 3), 30)
        async with httpx.AsyncClient(trust_env=False) as http:
            r = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert r.status_code == 200
    assert len(receiver.to("/ok")) == 1 and len(receiver.to(SLACK_PATH)) == 1
    assert len(receiver.to("/down")) == 2
    m = samples(r.text)
    sent = {
        (dict(labels)["channel_type"], dict(labels)["kind"], dict(labels)["result"]): value
        for (name, labels), value in m.items()
        if name == "whk_worker_notifications_total"
    }
    assert sent == {
        ("webhook", "trigger", "sent"): 1,
        ("slack", "trigger", "sent"): 1,
        ("webhook", "trigger", "retry"): 1,
        ("webhook", "trigger", "failed"): 1,
    }
    assert m[("whk_worker_alert_evaluations_total", (("result", "ok"),))] >= 1
    assert m[("whk_worker_alert_state_changes_total", ())] >= 1
    assert ("whk_worker_alert_evaluations_total", (("result", "error"),)) not in m


async def test_worker_metrics_are_off_by_default(db_url: str) -> None:
    assert ops_settings(db_url).ops.worker_metrics_port == 0
