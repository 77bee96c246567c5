"""Circuit breaker and auto-disable decisions for one webhook. Pure: no I/O, no clock.

What runs in production is SQL, not this module: the breaker state lives in ``whk.webhook_runtime``
(shared by every dispatcher process); ``whk.record_outcomes`` moves it (consecutive failures, open with a
doubling period capped by ``open_max_s``, half-open probe outcome), ``whk.claim_deliveries`` grants the one
probe once ``probe_at`` has passed (another once ``probe_until`` has), and ``whk.auto_disable_webhooks``
disables a webhook after its unbroken failure streak. Doing it there means two dispatchers cannot race a
read-modify-write of one breaker. The engine imports only ``is_failure`` from here, to tell
``whk.record_outcomes`` which outcomes count as failures.

The state machine below is the pure reference model of those transitions, unit-tested in
tests/unit/test_breaker.py. It also has a failure-rate window (``failure_rate``, ``min_requests``,
``window_s``) that the SQL does not implement. Every function takes ``now`` (Unix seconds) and returns a
new state; nothing is mutated.

.. code-block:: text

    closed ──(consecutive failures >= failure_threshold, or failure rate >= failure_rate
              over >= min_requests attempts in the current window)──▶ open
    open ──(now >= open_until: before_attempt grants ONE probe)──▶ half_open
    half_open ──(probe succeeds)──▶ closed          (counters reset)
    half_open ──(probe fails)──▶ open               (open time doubles per failed probe, capped)
    half_open ──(probe outcome never recorded for probe_timeout_s)──▶ a new probe is granted

While open, ``before_attempt`` denies every attempt and says until when (in SQL: the claim takes
nothing for that webhook, so its deliveries stay pending, are not dead-lettered early, and zero requests
are sent). Late results of attempts that started before the breaker opened are counted in the window but
do not change an open breaker (only the probe decides).

Auto-disable is separate from the breaker: ``failing_since`` is the time of the first failure
with no success after it; ``should_disable`` is true once that unbroken failure window reaches
``disable_after_s`` (default 5 days) — in SQL, ``whk.auto_disable_webhooks`` (the dispatcher's
maintenance sweep) then disables the webhook and emits ``whk.webhook.disabled``. Any success clears
it. ``blocked`` (SSRF) attempts count as failures: a URL that keeps resolving to a private address for
days ends disabled rather than retried forever.

Which outcome counts as what: ``is_failure`` (retry, throttle, blocked → failure; delivered,
awaiting_ack → success; gone disables the webhook on its own and is neither).
"""

from __future__ import annotations

import math
from typing import Final, Literal

import msgspec

from dispatcher.classify import Outcome

__all__ = [
    "BreakerConfig",
    "BreakerDecision",
    "BreakerState",
    "before_attempt",
    "is_failure",
    "record_failure",
    "record_outcome",
    "record_success",
    "should_disable",
]

BreakerMode = Literal["closed", "open", "half_open"]
_FAILURE_KINDS: Final = frozenset({"retry", "throttle", "blocked"})
_SUCCESS_KINDS: Final = frozenset({"delivered", "awaiting_ack"})


class BreakerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Thresholds; per webhook or global (``whk_05_configuracoes``), JSON via msgspec."""

    failure_threshold: int = 5  # consecutive failures that open the breaker
    failure_rate: float = 0.5  # ...or this failure ratio within one window
    min_requests: int = 20  # ...once the window holds at least this many attempts
    window_s: float = 60.0  # tumbling window for the failure rate
    open_s: float = 30.0  # first open period before a probe
    open_max_s: float = 600.0  # cap of the doubling open period after failed probes
    probe_timeout_s: float = 60.0  # a probe whose outcome never arrives is replaced after this
    disable_after_s: float = 5 * 86400.0  # unbroken failure window that disables the webhook

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.min_requests < 1:
            raise ValueError("failure_threshold and min_requests must be >= 1")
        if not (0 < self.failure_rate <= 1):
            raise ValueError("failure_rate must be in (0, 1]")
        for name in ("window_s", "open_s", "open_max_s", "probe_timeout_s", "disable_after_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds")
        if self.open_max_s < self.open_s:
            raise ValueError("open_max_s must be >= open_s")


class BreakerState(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The persisted state of one webhook's breaker (all times Unix seconds)."""

    mode: BreakerMode = "closed"
    consecutive_failures: int = 0
    window_started_at: float | None = None
    window_attempts: int = 0
    window_failures: int = 0
    opened_at: float | None = None
    open_until: float | None = None
    failed_probes: int = 0  # probes failed since the breaker last closed (doubles open time)
    probe_started_at: float | None = None
    failing_since: float | None = None  # first failure with no success after it


class BreakerDecision(msgspec.Struct, frozen=True, kw_only=True):
    """Whether an attempt may be sent now; ``retry_at`` says when to ask again if not."""

    allowed: bool
    probe: bool = False
    retry_at: float | None = None
    state: BreakerState


def is_failure(outcome: Outcome) -> bool | None:
    """True: counts as a failure; False: a success; None: neither (gone)."""
    if outcome.kind in _FAILURE_KINDS:
        return True
    if outcome.kind in _SUCCESS_KINDS:
        return False
    return None


def _open_period(cfg: BreakerConfig, failed_probes: int) -> float:
    return min(cfg.open_s * (2.0 ** min(failed_probes, 32)), cfg.open_max_s)


def _roll_window(cfg: BreakerConfig, st: BreakerState, now: float) -> BreakerState:
    if (
        st.window_started_at is None
        or now - st.window_started_at >= cfg.window_s
        or now < st.window_started_at
    ):
        return msgspec.structs.replace(st, window_started_at=now, window_attempts=0, window_failures=0)
    return st


def before_attempt(cfg: BreakerConfig, st: BreakerState, now: float) -> BreakerDecision:
    """May an attempt go out now? Grants exactly one probe when an open period has ended."""
    if st.mode == "closed":
        return BreakerDecision(allowed=True, state=st)
    if st.mode == "open":
        assert st.open_until is not None
        if now < st.open_until:
            return BreakerDecision(allowed=False, retry_at=st.open_until, state=st)
        probing = msgspec.structs.replace(st, mode="half_open", probe_started_at=now)
        return BreakerDecision(allowed=True, probe=True, state=probing)
    # half_open: one probe at a time; a probe that never reported back is replaced eventually
    if st.probe_started_at is not None and now - st.probe_started_at < cfg.probe_timeout_s:
        return BreakerDecision(allowed=False, retry_at=st.probe_started_at + cfg.probe_timeout_s, state=st)
    return BreakerDecision(allowed=True, probe=True, state=msgspec.structs.replace(st, probe_started_at=now))


def record_success(cfg: BreakerConfig, st: BreakerState, now: float) -> BreakerState:
    """An attempt succeeded (2xx): a probe closes the breaker; the failure streak ends."""
    if st.mode == "half_open":
        return BreakerState(window_started_at=now, window_attempts=1)
    st = _roll_window(cfg, st, now)
    return msgspec.structs.replace(
        st,
        consecutive_failures=0 if st.mode == "closed" else st.consecutive_failures,
        window_attempts=st.window_attempts + 1,
        failing_since=None,
    )


def record_failure(cfg: BreakerConfig, st: BreakerState, now: float) -> BreakerState:
    """An attempt failed: may open the breaker (or re-open it after a failed probe)."""
    failing_since = st.failing_since if st.failing_since is not None else now
    if st.mode == "half_open":
        period = _open_period(cfg, st.failed_probes + 1)
        return msgspec.structs.replace(
            st,
            mode="open",
            opened_at=now,
            open_until=now + period,
            failed_probes=st.failed_probes + 1,
            probe_started_at=None,
            consecutive_failures=st.consecutive_failures + 1,
            failing_since=failing_since,
        )
    st = _roll_window(cfg, st, now)
    st = msgspec.structs.replace(
        st,
        consecutive_failures=st.consecutive_failures + 1,
        window_attempts=st.window_attempts + 1,
        window_failures=st.window_failures + 1,
        failing_since=failing_since,
    )
    if st.mode == "open":
        return st
    tripped = st.consecutive_failures >= cfg.failure_threshold or (
        st.window_attempts >= cfg.min_requests and st.window_failures / st.window_attempts >= cfg.failure_rate
    )
    if not tripped:
        return st
    return msgspec.structs.replace(
        st, mode="open", opened_at=now, open_until=now + _open_period(cfg, 0), failed_probes=0
    )


def record_outcome(cfg: BreakerConfig, st: BreakerState, outcome: Outcome, now: float) -> BreakerState:
    """``record_success`` / ``record_failure`` according to ``is_failure(outcome)``."""
    failed = is_failure(outcome)
    if failed is None:
        return st
    return record_failure(cfg, st, now) if failed else record_success(cfg, st, now)


def should_disable(cfg: BreakerConfig, st: BreakerState, now: float) -> bool:
    """True once failures have continued, with no success, for ``disable_after_s``."""
    return st.failing_since is not None and now - st.failing_since >= cfg.disable_after_s
