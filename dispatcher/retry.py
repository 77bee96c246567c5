"""When to try a failed delivery again, and when to give up. Pure: no I/O, no clock.

The schedule comes from the database, never from here: the global setting ``retry.policy``
(whk_05_configuracoes; seeded with Svix's schedule, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h) with the
webhook's own ``retry_policy`` laid over it, as ``whk.effective_retry_policy`` returns it with the webhook
row (``whk.expire_acks`` counts the same steps). Each delay is jittered by ± ``jitter`` so a failing
endpoint's backlog does not return as one wave. After the last delay has been used, the next failure
makes the delivery a dead letter (``next_delay`` returns None); no schedule at all means the first
failure is final.

Throttling outcomes (429, 502, 503, 504, timeouts) wait at least ``throttle_floor_s``. A
``Retry-After`` from the receiver is honoured within the clamp ``[lo, retry_after_cap_factor * lo]``
where ``lo = max(scheduled delay, floor)``: we never come back sooner than our own schedule, and a
receiver cannot park a delivery for a week.

``blocked`` (the SSRF guard refused every address; no request was sent): the engine does not ask
``next_delay`` while ``retry_blocked`` is true (the default): the delivery waits, pending, and the
webhook is quarantined until an operator fixes the URL or the policy (docs/delivery.md, "Fault
isolation"). ``next_delay`` keeps the schedule's answer for callers that want one.
``retry_blocked=False`` dead-letters on the first block instead.

``RetryPolicy.from_json(obj)`` reads the JSON object; ``to_json`` writes every field.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from dispatcher.classify import Outcome
from whk.errors import WhkError

__all__ = ["RetryPolicy", "RetryPolicyError", "max_attempts", "next_delay"]

_MAX_STEPS: Final = 50
_MAX_DELAY_S: Final = 30 * 86400.0
_FINAL_KINDS: Final = frozenset({"delivered", "awaiting_ack", "gone"})


class RetryPolicyError(WhkError):
    """A retry policy (setting, global or per-webhook override) is invalid."""


def _problem(policy: RetryPolicy) -> str | None:
    if len(policy.schedule_s) > _MAX_STEPS:
        return f"schedule_s has more than {_MAX_STEPS} steps"
    for delay in policy.schedule_s:
        if not (math.isfinite(delay) and 0 < delay <= _MAX_DELAY_S):
            return f"schedule_s values must be > 0 and <= {_MAX_DELAY_S:g} seconds, got {delay!r}"
    if not (math.isfinite(policy.jitter) and 0 <= policy.jitter < 1):
        return f"jitter must be in [0, 1), got {policy.jitter!r}"
    if not (math.isfinite(policy.throttle_floor_s) and 0 <= policy.throttle_floor_s <= 86400):
        return f"throttle_floor_s must be in [0, 86400], got {policy.throttle_floor_s!r}"
    if not (math.isfinite(policy.retry_after_cap_factor) and 1 <= policy.retry_after_cap_factor <= 100):
        return f"retry_after_cap_factor must be in [1, 100], got {policy.retry_after_cap_factor!r}"
    return None


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Retry schedule and throttling rules; invalid values raise ``ValueError`` on construction."""

    schedule_s: tuple[float, ...] = ()  # no schedule: the first failure is final
    jitter: float = 0.2
    throttle_floor_s: float = 60.0
    retry_after_cap_factor: float = 2.0
    retry_blocked: bool = True

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem is not None:
            raise ValueError(problem)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any] | None) -> RetryPolicy:
        """The policy a JSON object describes; members left out take the field defaults."""
        try:
            return msgspec.convert(dict(obj or {}), cls)
        except msgspec.ValidationError as exc:
            raise RetryPolicyError(
                f"invalid retry policy: {exc}",
                hint="keys: schedule_s (list of seconds), jitter, throttle_floor_s, retry_after_cap_factor, "
                "retry_blocked",
            ) from exc

    def to_json(self) -> dict[str, Any]:
        """Every field as plain JSON values (the schedule as a list)."""
        return {
            "schedule_s": list(self.schedule_s),
            "jitter": self.jitter,
            "throttle_floor_s": self.throttle_floor_s,
            "retry_after_cap_factor": self.retry_after_cap_factor,
            "retry_blocked": self.retry_blocked,
        }


def max_attempts(policy: RetryPolicy) -> int:
    """Attempts a delivery gets before it becomes a dead letter (the first try + one per step)."""
    return 1 + len(policy.schedule_s)


def next_delay(policy: RetryPolicy, attempts_made: int, outcome: Outcome, rng: random.Random) -> float | None:
    """Seconds until the next attempt after ``attempts_made`` attempts (the failed one included),
    or None: dead letter. ``outcome`` must be a non-final one (retry, throttle, blocked)."""
    if attempts_made < 1:
        raise ValueError(f"attempts_made must be >= 1, got {attempts_made}")
    if outcome.kind in _FINAL_KINDS:
        raise ValueError(f"outcome {outcome.kind!r} is final: there is nothing to retry")
    if outcome.kind == "blocked" and not policy.retry_blocked:
        return None
    step = attempts_made - 1
    if step >= len(policy.schedule_s):
        return None
    base = policy.schedule_s[step]
    jittered = base * (1.0 + rng.uniform(-policy.jitter, policy.jitter))
    if outcome.kind != "throttle":
        return jittered
    low = max(base, policy.throttle_floor_s)
    if outcome.retry_after_s is None:
        return max(jittered, policy.throttle_floor_s)
    high = low * policy.retry_after_cap_factor
    wanted = min(max(outcome.retry_after_s, low), high)
    # Spread only upwards: never before the receiver's Retry-After, never past the clamp.
    return min(wanted * (1.0 + rng.uniform(0.0, policy.jitter)), high)
