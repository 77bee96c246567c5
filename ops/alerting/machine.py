"""The alert state machine: one rule, one evaluation, pure (no I/O, the clock is passed in).

::

    ok / resolved ──breaching──▶ pending ──held for for_s──▶ firing ──clears──▶ resolved
          ▲                         │                          │
          └──────clears─────────────┘                          └─ reminders every throttle_seconds and
                                                                  escalation steps after after_s, both
                                                                  only while unacknowledged

An acknowledgement (set by the API) stops reminders and escalation; the next evaluation tells the
channels paged so far, once. ``for_s = 0`` goes from ok straight to firing. A rule with no value
(nothing measured yet) is not breaching. Times come from the database clock; a clock that jumps
backwards leaves a pending rule pending and a firing rule firing (negative elapsed times never fire
anything), and a rule notifies its trigger only on the transition into firing, so a jump cannot page
twice.

Silence suppresses trigger, reminder and escalation notifications (the state machine and the history
still run); a resolve is sent to exactly the channels paged in this activation, silenced or not, so a
PagerDuty incident opened before a silence is still closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

__all__ = ["Decision", "Notify", "RuleState", "Step", "breaches", "evaluate"]

State = Literal["ok", "pending", "firing", "resolved"]
Kind = Literal["trigger", "repeat", "escalate", "acknowledge", "resolve", "test"]


def breaches(value: float | None, operator: str, threshold: float) -> bool:
    """Whether ``value operator threshold`` holds; no value never breaches."""
    if value is None:
        return False
    if operator == ">":
        return value > threshold
    if operator == ">=":
        return value >= threshold
    if operator == "<":
        return value < threshold
    if operator == "<=":
        return value <= threshold
    raise ValueError(f"unknown operator {operator!r}")


@dataclass(frozen=True, slots=True)
class Step:
    """An escalation step: notify ``channels`` once the rule has fired for ``after_s`` unacknowledged."""

    after_s: int
    channels: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RuleState:
    """What the machine reads and writes of one rule (whk.whk_06_alertas)."""

    state: State
    for_s: int
    throttle_seconds: int
    channels: tuple[int, ...]
    escalation: tuple[Step, ...] = ()
    pending_since: datetime | None = None
    firing_since: datetime | None = None
    last_notified_at: datetime | None = None
    escalation_step: int = 0
    acknowledged_at: datetime | None = None
    ack_notified: bool = False
    silenced_until: datetime | None = None
    paged_channels: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Notify:
    kind: Kind
    channels: tuple[int, ...]
    step: int = 0


@dataclass(frozen=True, slots=True)
class Decision:
    """The rule's next state, whether an activation opens or closes, and what to send."""

    rule: RuleState
    opened: bool = False
    closed: bool = False
    notify: tuple[Notify, ...] = field(default_factory=tuple)
    suppressed: tuple[Notify, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        return self.opened or self.closed or bool(self.notify) or bool(self.suppressed)


def _since(now: datetime, then: datetime | None) -> float:
    return -1.0 if then is None else (now - then).total_seconds()


def _fire(rule: RuleState, now: datetime) -> Decision:
    silenced = rule.silenced_until is not None and rule.silenced_until > now
    first = Notify("trigger", rule.channels)
    rule = replace(
        rule,
        state="firing",
        firing_since=now,
        pending_since=rule.pending_since or now,
        escalation_step=0,
        acknowledged_at=None,
        ack_notified=False,
        last_notified_at=None if silenced or not rule.channels else now,
        paged_channels=() if silenced else rule.channels,
    )
    if silenced:
        return Decision(rule, opened=True, suppressed=(first,))
    return Decision(rule, opened=True, notify=(first,) if first.channels else ())


def _while_firing(rule: RuleState, now: datetime) -> Decision:
    if rule.acknowledged_at is not None:
        if rule.ack_notified:
            return Decision(rule)
        # Acknowledged through the API since the last evaluation: tell every channel paged so far once
        # (PagerDuty gets an `acknowledge` event for the same dedup_key); escalation stops here.
        acked = replace(rule, ack_notified=True)
        if not rule.paged_channels:
            return Decision(acked)
        return Decision(acked, notify=(Notify("acknowledge", rule.paged_channels),))
    silenced = rule.silenced_until is not None and rule.silenced_until > now
    sends: list[Notify] = []
    step = rule.escalation_step
    firing_for = _since(now, rule.firing_since)
    while step < len(rule.escalation) and firing_for >= rule.escalation[step].after_s:
        sends.append(Notify("escalate", rule.escalation[step].channels, step + 1))
        step += 1
    due = rule.last_notified_at is None or _since(now, rule.last_notified_at) >= rule.throttle_seconds
    if rule.throttle_seconds > 0 and rule.channels and due and not sends:
        sends.append(Notify("repeat", rule.channels))
    if not sends:
        return Decision(replace(rule, escalation_step=step))
    if silenced:
        return Decision(replace(rule, escalation_step=step), suppressed=tuple(sends))
    paged = list(rule.paged_channels)
    for n in sends:
        paged.extend(c for c in n.channels if c not in paged)
    return Decision(
        replace(rule, escalation_step=step, last_notified_at=now, paged_channels=tuple(paged)),
        notify=tuple(sends),
    )


def evaluate(rule: RuleState, breaching: bool, now: datetime) -> Decision:
    """The next state of ``rule`` given whether its condition holds at ``now``."""
    if rule.state in ("ok", "resolved"):
        if not breaching:
            return Decision(rule)
        if rule.for_s == 0:
            return _fire(rule, now)
        return Decision(replace(rule, state="pending", pending_since=now))
    if rule.state == "pending":
        if not breaching:
            return Decision(replace(rule, state="ok", pending_since=None))
        if _since(now, rule.pending_since) >= rule.for_s:
            return _fire(rule, now)
        return Decision(rule)
    # firing
    if breaching:
        return _while_firing(rule, now)
    resolve = Notify("resolve", rule.paged_channels)
    cleared = replace(
        rule,
        state="resolved",
        pending_since=None,
        firing_since=None,
        escalation_step=0,
        acknowledged_at=None,
        ack_notified=False,
        paged_channels=(),
    )
    return Decision(cleared, closed=True, notify=(resolve,) if resolve.channels else ())
