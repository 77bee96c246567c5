"""Never unsigned, seen by operators: webhooks waiting for a signing secret show in health (degraded, with
their ids), in whk.kpi_platform and as the alert metric ``webhooks_needs_secret`` (built-in rule)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from ops.alerting.evaluate import Evaluator
from tests.support.delivery import TEST_BOX, make_consumer, make_webhook
from tests.support.ops import disable_builtins, rule
from whk.webhook_secrets import provision_pending

pytestmark = [pytest.mark.db]

URL = "http://127.0.0.1:9/hook"


def last_value(conn: psycopg.Connection[Any], alert: int) -> Any:
    row = conn.execute("SELECT last_value FROM whk.whk_06_alertas WHERE id = %s", [alert]).fetchone()
    assert row is not None
    return row[0]


async def test_waiting_webhooks_are_counted_by_the_alert_metric_and_the_kpi_view(conn, aconn):
    builtin = conn.execute(
        "SELECT condition ->> 'metric', for_s FROM whk.whk_06_alertas WHERE builtin = 'webhook_needs_secret'"
    ).fetchone()
    assert builtin == ("webhooks_needs_secret", 300)
    disable_builtins(conn)
    a = make_consumer(conn, "acme")
    b = make_consumer(conn, "globex")
    with conn.transaction():
        signed = make_webhook(conn, a, URL)
    waiting = make_webhook(conn, a, URL, secret=None)
    make_webhook(conn, b, URL, secret=None)

    def r(consumer: int | None = None, **cond: Any) -> int:
        return rule(
            conn,
            {"metric": "webhooks_needs_secret", "operator": ">", "threshold": 1e9, **cond},
            consumer_id=consumer,
        )

    rules = {r(): 2.0, r(a): 1.0, r(webhook_id=waiting): 1.0, r(webhook_id=signed): 0.0}
    await Evaluator(lease_s=60, rollup_horizon_s=600).evaluate(aconn)
    assert {alert: last_value(conn, alert) for alert in rules} == rules
    assert conn.execute("SELECT webhooks_needs_secret FROM whk.kpi_platform").fetchone() == (2,)

    assert len(provision_pending(conn, TEST_BOX)) == 2
    await Evaluator(lease_s=60, rollup_horizon_s=600).evaluate(aconn)
    assert [last_value(conn, alert) for alert in rules] == [0.0] * 4
    assert conn.execute("SELECT webhooks_needs_secret FROM whk.kpi_platform").fetchone() == (0,)
