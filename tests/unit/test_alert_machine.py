"""The alert state machine (ops/alerting/machine.py): pure, every transition and the clock's tricks."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ops.alerting.machine import Notify, RuleState, Step, breaches, evaluate

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def rule(**kw) -> RuleState:  # type: ignore[no-untyped-def]
    base = RuleState(state="ok", for_s=60, throttle_seconds=300, channels=(1, 2))
    return replace(base, **kw)


@pytest.mark.parametrize(
    ("value", "op", "threshold", "expected"),
    [
        (0.5, ">", 0.2, True),
        (0.2, ">", 0.2, False),
        (0.2, ">=", 0.2, True),
        (0.0, "<", 1, True),
        (1.0, "<", 1, False),
        (1.0, "<=", 1, True),
        (None, ">", 0, False),
    ],
)
def test_breaches(value, op, threshold, expected):
    assert breaches(value, op, threshold) is expected


def test_breaches_refuses_an_unknown_operator():
    with pytest.raises(ValueError, match="operator"):
        breaches(1.0, "!=", 0)


def test_ok_stays_ok_while_healthy():
    d = evaluate(rule(), False, at(0))
    assert d.rule == rule() and not d.changed


def test_pending_then_firing_after_for():
    d = evaluate(rule(), True, at(0))
    assert d.rule.state == "pending" and d.rule.pending_since == at(0) and not d.notify
    d = evaluate(d.rule, True, at(59))
    assert d.rule.state == "pending" and not d.notify and not d.opened
    d = evaluate(d.rule, True, at(60))
    assert d.rule.state == "firing" and d.opened
    assert d.notify == (Notify("trigger", (1, 2)),)
    assert d.rule.firing_since == at(60) and d.rule.last_notified_at == at(60)
    assert d.rule.paged_channels == (1, 2)


def test_one_slow_evaluation_does_not_fire():
    d = evaluate(rule(), True, at(0))
    d = evaluate(d.rule, False, at(30))
    assert d.rule.state == "ok" and d.rule.pending_since is None and not d.opened


def test_for_zero_fires_at_once():
    d = evaluate(rule(for_s=0), True, at(0))
    assert d.rule.state == "firing" and d.opened and d.notify == (Notify("trigger", (1, 2)),)


def firing(**kw) -> RuleState:  # type: ignore[no-untyped-def]
    d = evaluate(rule(for_s=0, **kw), True, at(0))
    assert d.rule.state == "firing"
    return d.rule


def test_throttle_one_reminder_per_period():
    r = firing()
    for t in (1, 100, 299):
        d = evaluate(r, True, at(t))
        assert not d.notify, t
        r = d.rule
    d = evaluate(r, True, at(300))
    assert d.notify == (Notify("repeat", (1, 2)),)
    assert evaluate(d.rule, True, at(301)).notify == ()


def test_throttle_zero_sends_no_reminders():
    r = firing(throttle_seconds=0)
    assert evaluate(r, True, at(10_000)).notify == ()


def test_escalation_steps_fire_in_order_once():
    r = firing(
        escalation=(Step(after_s=60, channels=(3,)), Step(after_s=120, channels=(4,))), throttle_seconds=0
    )
    assert evaluate(r, True, at(59)).notify == ()
    d = evaluate(r, True, at(60))
    assert d.notify == (Notify("escalate", (3,), 1),)
    assert d.rule.escalation_step == 1 and d.rule.paged_channels == (1, 2, 3)
    assert evaluate(d.rule, True, at(90)).notify == ()
    d = evaluate(d.rule, True, at(500))
    assert d.notify == (Notify("escalate", (4,), 2),)
    assert evaluate(d.rule, True, at(900)).notify == ()


def test_acknowledge_stops_escalation_and_reminders_and_is_announced_once():
    r = firing(escalation=(Step(after_s=60, channels=(3,)),))
    r = replace(r, acknowledged_at=at(10))
    d = evaluate(r, True, at(20))
    assert d.notify == (Notify("acknowledge", (1, 2)),)
    r = d.rule
    assert r.ack_notified
    for t in (60, 300, 10_000):
        assert evaluate(r, True, at(t)).notify == ()


def test_resolve_goes_to_every_channel_paged_and_clears():
    r = firing(escalation=(Step(after_s=60, channels=(3,)),), throttle_seconds=0)
    r = evaluate(r, True, at(60)).rule
    d = evaluate(replace(r, acknowledged_at=at(61), ack_notified=True), False, at(70))
    assert d.closed and d.rule.state == "resolved"
    assert d.notify == (Notify("resolve", (1, 2, 3)),)
    assert d.rule.acknowledged_at is None and d.rule.escalation_step == 0 and d.rule.paged_channels == ()
    # resolved behaves like ok: a new breach opens a new activation (for_s is 0 here)
    d = evaluate(d.rule, True, at(80))
    assert d.rule.state == "firing" and d.opened and d.notify == (Notify("trigger", (1, 2)),)


def test_silence_suppresses_pages_but_not_the_machine():
    r = rule(for_s=0, silenced_until=at(100))
    d = evaluate(r, True, at(0))
    assert d.rule.state == "firing" and d.opened and d.notify == ()
    assert d.suppressed == (Notify("trigger", (1, 2)),)
    assert d.rule.paged_channels == ()
    # nothing was paged, so clearing while silenced sends nothing
    assert evaluate(d.rule, False, at(50)).notify == ()
    # still firing when the silence ends: the reminder goes out at once
    d2 = evaluate(d.rule, True, at(101))
    assert d2.notify == (Notify("repeat", (1, 2)),)


def test_clock_jumping_back_fires_nothing_twice():
    d = evaluate(rule(), True, at(0))
    d = evaluate(d.rule, True, at(-3600))  # the clock went back an hour
    assert d.rule.state == "pending" and not d.opened
    r = firing(escalation=(Step(after_s=60, channels=(3,)),))
    for t in (-3600, -10, 0, 30):
        d = evaluate(r, True, at(t))
        assert d.notify == () and not d.opened, t
        r = d.rule


def test_clock_jumping_forward_fires_once():
    d = evaluate(rule(), True, at(0))
    d = evaluate(d.rule, True, at(86_400 * 365))
    assert d.opened and len(d.notify) == 1
    d2 = evaluate(d.rule, True, at(86_400 * 365 + 1))
    assert not d2.opened and d2.notify == ()
