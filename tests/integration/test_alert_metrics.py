"""Every alert metric, evaluated by the worker's evaluator against state put in place by hand, with the
value a person computes from that state (scopes: webhook, consumer, global)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from ops.alerting.evaluate import Evaluator
from tests.support.delivery import make_consumer
from tests.support.ops import disable_builtins, rule
from tests.support.resources import make_delivery, make_webhook

pytestmark = [pytest.mark.db]


def value(conn: psycopg.Connection[Any], alert: int) -> Any:
    row = conn.execute("SELECT last_value, state FROM whk.whk_06_alertas WHERE id = %s", [alert]).fetchone()
    assert row is not None
    return row


async def test_every_metric_reads_its_view(conn, aconn):
    disable_builtins(conn)
    a = make_consumer(conn, "acme")
    b = make_consumer(conn, "globex")
    h1 = make_webhook(conn, a)
    h2 = make_webhook(conn, a, name="second")
    hb = make_webhook(conn, b)
    # h1: 3 attempts failed (one dead delivery) + 1 delivered; durations 10, 20, 30 and 10 ms.
    make_delivery(conn, h1, status="dead", attempts=3)
    make_delivery(conn, h1, status="delivered", attempts=1)
    # h2: one delivered attempt; hb: one dead delivery of two attempts.
    make_delivery(conn, h2, status="delivered", attempts=1)
    make_delivery(conn, hb, status="dead", attempts=2)
    # State metrics.
    conn.execute(
        "INSERT INTO whk.webhook_runtime (webhook_id, breaker_state, consecutive_failures, opened_at) VALUES "
        "(%s, 'open', 7, now() - interval '20 minutes'), (%s, 'closed', 2, NULL)",
        [h1, hb],
    )
    waiting = make_delivery(conn, h2, status="pending")
    conn.execute(
        "UPDATE whk.delivery_queue SET next_attempt_at = now() - interval '10 minutes' WHERE id = %s",
        [waiting],
    )
    conn.execute("UPDATE whk.whk_01_webhooks SET status = 'disabled' WHERE id = %s", [hb])
    conn.execute(
        "INSERT INTO whk.outbox (event_type, data, operation, created_at) "
        "VALUES ('order.created', '{}', 'EMIT', now() - interval '2 minutes')"
    )
    conn.execute(
        "INSERT INTO whk.dispatchers (id, hostname, pid, version, heartbeat_at) VALUES "
        "('live', 'h', 1, 't', now()), ('dead', 'h', 2, 't', now() - interval '1 hour')"
    )
    conn.execute(
        "INSERT INTO whk.slos (id, consumer_id, webhook_id, name, objective) OVERRIDING SYSTEM VALUE "
        "VALUES (900, %s, %s, 's', 0.9)",
        [a, h1],
    )

    def r(metric: str, consumer: int | None = None, **cond: Any) -> int:
        return rule(conn, {"metric": metric, "operator": ">", "threshold": 1e9, **cond}, consumer_id=consumer)

    rules = {
        "failure_rate h1": (r("failure_rate", webhook_id=h1), 0.75),
        "failure_rate acme": (r("failure_rate", a), 3 / 5),
        "failure_rate global": (r("failure_rate"), 5 / 7),
        "retry_rate h1": (r("retry_rate", webhook_id=h1), 0.5),
        "dead_letters global": (r("dead_letters"), 2.0),
        "dead_letters acme": (r("dead_letters", a), 1.0),
        "latency_p95_ms h1": (r("latency_p95_ms", webhook_id=h1), 100.0),  # 30 ms falls in the <= 100 bucket
        "consecutive_failures global": (r("consecutive_failures"), 7.0),
        "consecutive_failures globex": (r("consecutive_failures", b), 2.0),
        "breaker_open_s acme": (r("breaker_open_s", a), 1200.0),
        "webhooks_disabled global": (r("webhooks_disabled"), 1.0),
        "webhooks_disabled acme": (r("webhooks_disabled", a), 0.0),
        "live_dispatchers": (r("live_dispatchers"), 1.0),
        "unrouted_age_s": (r("unrouted_age_s"), 120.0),
        "pending_age_s acme": (r("pending_age_s", a), 600.0),
        "slo_burn_rate": (r("slo_burn_rate", slo_id=900, long_window_s=3600, short_window_s=300), 7.5),
    }
    report = await Evaluator(lease_s=60, rollup_horizon_s=600).evaluate(aconn)
    assert report.rules == len(rules)
    for label, (alert, expected) in rules.items():
        got, state = value(conn, alert)
        assert got == pytest.approx(expected, rel=0.02, abs=0.5 if expected > 50 else 1e-9), label
        assert state == "ok", label
    # The same rule with a threshold the value crosses: pending (for_s 60), with no channel to page.
    crossing = rule(
        conn, {"metric": "failure_rate", "operator": ">=", "threshold": 0.75, "webhook_id": h1}, for_s=60
    )
    await Evaluator(lease_s=60, rollup_horizon_s=600).evaluate_rules(aconn)
    assert value(conn, crossing) == (pytest.approx(0.75), "pending")


# Quiet all day, every day (two windows that touch are joined by whk.quiet_until).
ALWAYS_QUIET = {
    "time_zone": "UTC",
    "windows": [
        {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00", "end": "12:00"},
        {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "12:00", "end": "00:00"},
    ],
}


def old_backlog(conn: psycopg.Connection[Any], hook: int) -> None:
    """A pending delivery of ``hook`` due for an hour."""
    waiting = make_delivery(conn, hook, status="pending")
    conn.execute(
        "UPDATE whk.delivery_queue SET next_attempt_at = now() - interval '1 hour' WHERE id = %s", [waiting]
    )


async def test_backlog_alerts_leave_out_deliveries_that_wait_on_purpose(conn, aconn):
    """Paused webhooks, suspended consumers and consumers inside their quiet hours hold their deliveries by
    design: an hour-old backlog of theirs fires no backlog rule, the same backlog of an active webhook
    (or of a quiet consumer's urgent webhook) does."""
    disable_builtins(conn)
    conn.execute("UPDATE whk.whk_06_alertas SET enabled = true, for_s = 0 WHERE builtin = 'backlog_old'")
    (builtin,) = conn.execute("SELECT id FROM whk.whk_06_alertas WHERE builtin = 'backlog_old'").fetchone()
    active = make_consumer(conn, "acme")
    paused = make_webhook(conn, active, name="paused")
    conn.execute("UPDATE whk.whk_01_webhooks SET status = 'paused' WHERE id = %s", [paused])
    suspended = make_consumer(conn, "frozen")
    conn.execute("UPDATE whk.whk_04_assinantes SET status = 'suspended' WHERE id = %s", [suspended])
    of_suspended = make_webhook(conn, suspended, name="of suspended")
    sleepy = make_consumer(conn, "sleepy")
    conn.execute("SELECT whk.set_consumer_quiet_hours(%s, %s)", [sleepy, Jsonb(ALWAYS_QUIET)])
    quiet = make_webhook(conn, sleepy, name="quiet")
    for hook in (paused, of_suspended, quiet):
        old_backlog(conn, hook)

    def backlog_rule(**scope: Any) -> int:
        return rule(conn, {"metric": "pending_age_s", "operator": ">", "threshold": 300, **scope})

    scoped = {hook: backlog_rule(webhook_id=hook) for hook in (paused, of_suspended, quiet)}
    per_consumer = {
        c: rule(conn, {"metric": "pending_age_s", "operator": ">", "threshold": 300}, consumer_id=c)
        for c in (active, suspended, sleepy)
    }
    await Evaluator(lease_s=60, rollup_horizon_s=600).evaluate(aconn)
    for alert in [builtin, *scoped.values(), *per_consumer.values()]:
        assert value(conn, alert) == (0.0, "ok"), alert
    # The view still shows the waiting backlog (the dashboard's "oldest due"): only the alerts leave it out.
    ages = conn.execute(
        "SELECT count(*) FROM whk.kpi_webhook_state "
        "WHERE oldest_pending_age_s > 3000 AND webhook_id = ANY(%s)",
        [[paused, of_suspended, quiet]],
    ).fetchone()
    assert ages == (3,)

    # An urgent webhook of the quiet consumer is served during quiet hours: its backlog is late.
    urgent = make_webhook(conn, sleepy, name="urgent")
    conn.execute("UPDATE whk.whk_01_webhooks SET urgent = true WHERE id = %s", [urgent])
    old_backlog(conn, urgent)
    # The same backlog on an active webhook of an active consumer is late too.
    late = make_webhook(conn, active, name="late")
    old_backlog(conn, late)
    on_late, on_urgent = backlog_rule(webhook_id=late), backlog_rule(webhook_id=urgent)
    await Evaluator(lease_s=60, rollup_horizon_s=600).evaluate(aconn)
    for alert in (builtin, on_late, on_urgent, per_consumer[active], per_consumer[sleepy]):
        got, state = value(conn, alert)
        assert state == "firing" and got == pytest.approx(3600, abs=60), alert
    for alert in [*scoped.values(), per_consumer[suspended]]:
        assert value(conn, alert) == (0.0, "ok"), alert

    # Resumed, the paused webhook's hour-old backlog is late like any other.
    conn.execute("UPDATE whk.whk_01_webhooks SET status = 'active' WHERE id = %s", [paused])
    await Evaluator(lease_s=60, rollup_horizon_s=600).evaluate(aconn)
    assert value(conn, scoped[paused])[1] == "firing"
