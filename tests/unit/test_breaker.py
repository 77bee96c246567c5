"""Circuit breaker transitions and the auto-disable decision, driven by an explicit clock."""

from __future__ import annotations

import msgspec
import pytest

from dispatcher.breaker import (
    BreakerConfig,
    BreakerState,
    before_attempt,
    is_failure,
    record_failure,
    record_outcome,
    record_success,
    should_disable,
)
from dispatcher.classify import Outcome

CFG = BreakerConfig(
    failure_threshold=3, min_requests=10, failure_rate=0.5, window_s=60, open_s=30, open_max_s=240
)
DAY = 86400.0


def fail_n(state: BreakerState, n: int, start: float, step: float = 1.0) -> BreakerState:
    for i in range(n):
        state = record_failure(CFG, state, start + i * step)
    return state


def alternate(cfg: BreakerConfig, rounds: int) -> BreakerState:
    """success, failure, success, failure...: never two failures in a row (a 50% failure rate)."""
    st = BreakerState()
    for i in range(rounds):
        st = record_success(cfg, st, i)
        st = record_failure(cfg, st, i + 0.5)
    return st


def test_closed_allows() -> None:
    decision = before_attempt(CFG, BreakerState(), 0)
    assert decision.allowed and not decision.probe and decision.retry_at is None


def test_consecutive_failures_open_it() -> None:
    st = fail_n(BreakerState(), 2, 0)
    assert st.mode == "closed" and st.consecutive_failures == 2
    st = record_failure(CFG, st, 2)
    assert st.mode == "open"
    assert st.opened_at == 2 and st.open_until == 32


def test_a_success_resets_the_streak() -> None:
    st = fail_n(BreakerState(), 2, 0)
    st = record_success(CFG, st, 3)
    assert st.consecutive_failures == 0
    st = fail_n(st, 2, 4)
    assert st.mode == "closed"


def test_failure_rate_over_the_window_opens_it() -> None:
    cfg = msgspec.structs.replace(CFG, failure_threshold=100)
    st = alternate(cfg, 5)
    assert st.window_attempts == 10 and st.window_failures == 5
    assert st.mode == "open"


def test_failure_rate_needs_min_requests() -> None:
    st = alternate(msgspec.structs.replace(CFG, failure_threshold=100), 4)
    assert st.mode == "closed"  # 8 attempts < min_requests


def test_window_rolls_over() -> None:
    cfg = msgspec.structs.replace(CFG, failure_threshold=100)
    st = record_failure(cfg, alternate(cfg, 4), 100)  # a new window: the old 8 attempts are forgotten
    assert st.window_started_at == 100 and st.window_attempts == 1 and st.window_failures == 1
    assert st.mode == "closed"


def test_clock_going_backwards_starts_a_new_window() -> None:
    st = record_failure(CFG, BreakerState(), 100)
    st = record_failure(CFG, st, 50)
    assert st.window_started_at == 50 and st.window_attempts == 1


class TestOpen:
    def opened(self) -> BreakerState:
        st = fail_n(BreakerState(), 3, 0)
        assert st.mode == "open" and st.open_until == 32
        return st

    def test_open_denies_until_open_until(self) -> None:
        st = self.opened()
        for t in (2, 10, 31.9):
            decision = before_attempt(CFG, st, t)
            assert not decision.allowed and decision.retry_at == 32 and decision.state == st

    def test_one_probe_when_the_period_ends(self) -> None:
        st = self.opened()
        first = before_attempt(CFG, st, 32)
        assert first.allowed and first.probe and first.state.mode == "half_open"
        second = before_attempt(CFG, first.state, 33)
        assert not second.allowed and second.retry_at == 32 + CFG.probe_timeout_s

    def test_probe_success_closes(self) -> None:
        probe = before_attempt(CFG, self.opened(), 40).state
        st = record_success(CFG, probe, 41)
        assert st.mode == "closed"
        assert st.consecutive_failures == 0 and st.failed_probes == 0 and st.failing_since is None
        assert before_attempt(CFG, st, 42).allowed

    def test_probe_failure_reopens_with_doubling_capped(self) -> None:
        st = self.opened()
        periods = []
        t = 32.0
        for _ in range(6):
            decision = before_attempt(CFG, st, t)
            assert decision.probe
            st = record_failure(CFG, decision.state, t)
            assert st.mode == "open"
            assert st.open_until is not None
            periods.append(st.open_until - t)
            t = st.open_until
        assert periods == [60, 120, 240, 240, 240, 240]

    def test_lost_probe_is_replaced_after_probe_timeout(self) -> None:
        probe = before_attempt(CFG, self.opened(), 32).state
        assert not before_attempt(CFG, probe, 32 + CFG.probe_timeout_s - 1).allowed
        again = before_attempt(CFG, probe, 32 + CFG.probe_timeout_s)
        assert again.allowed and again.probe and again.state.probe_started_at == 32 + CFG.probe_timeout_s

    def test_late_results_do_not_change_an_open_breaker(self) -> None:
        st = self.opened()
        after_fail = record_failure(CFG, st, 5)
        assert after_fail.mode == "open" and after_fail.open_until == 32
        after_ok = record_success(CFG, st, 6)
        assert after_ok.mode == "open" and after_ok.open_until == 32
        assert after_ok.failing_since is None  # but the endpoint did answer: not "unbroken" failure

    def test_states_are_immutable(self) -> None:
        st = self.opened()
        with pytest.raises(AttributeError):
            st.mode = "closed"  # type: ignore[misc]


class TestAutoDisable:
    cfg = BreakerConfig()

    def test_default_window_is_five_days(self) -> None:
        assert self.cfg.disable_after_s == 5 * DAY

    def test_unbroken_failures_for_five_days_disable(self) -> None:
        st = record_failure(self.cfg, BreakerState(), 0)
        assert st.failing_since == 0
        st = record_failure(self.cfg, st, 4 * DAY)
        assert not should_disable(self.cfg, st, 4 * DAY)
        st = record_failure(self.cfg, st, 5 * DAY)
        assert should_disable(self.cfg, st, 5 * DAY)

    def test_a_success_restarts_the_window(self) -> None:
        st = record_failure(self.cfg, BreakerState(), 0)
        st = record_success(self.cfg, st, 3 * DAY)
        st = record_failure(self.cfg, st, 4 * DAY)
        assert st.failing_since == 4 * DAY
        assert not should_disable(self.cfg, st, 6 * DAY)
        assert should_disable(self.cfg, st, 9 * DAY)

    def test_probe_failures_keep_the_first_failure_time(self) -> None:
        st = fail_n(BreakerState(), 3, 0)
        probe = before_attempt(CFG, st, 40).state
        st = record_failure(CFG, probe, 40)
        assert st.failing_since == 0

    def test_never_failed(self) -> None:
        assert not should_disable(self.cfg, BreakerState(), 100 * DAY)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("retry", True),
        ("throttle", True),
        ("blocked", True),
        ("delivered", False),
        ("awaiting_ack", False),
        ("gone", None),
    ],
)
def test_is_failure(kind: str, expected: bool | None) -> None:
    assert is_failure(Outcome(kind=kind)) is expected  # type: ignore[arg-type]


def test_record_outcome_dispatches() -> None:
    st = BreakerState()
    assert record_outcome(CFG, st, Outcome(kind="gone"), 1) == st
    assert record_outcome(CFG, st, Outcome(kind="retry"), 1).consecutive_failures == 1
    failed = record_outcome(CFG, st, Outcome(kind="retry"), 1)
    assert record_outcome(CFG, failed, Outcome(kind="delivered"), 2).consecutive_failures == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0},
        {"min_requests": 0},
        {"failure_rate": 0},
        {"failure_rate": 1.5},
        {"window_s": 0},
        {"open_s": -1},
        {"open_s": 100, "open_max_s": 50},
        {"probe_timeout_s": float("inf")},
        {"disable_after_s": float("nan")},
    ],
)
def test_invalid_config(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerConfig(**kwargs)  # type: ignore[arg-type]


def test_state_and_config_round_trip_as_json() -> None:
    st = fail_n(BreakerState(), 3, 0)
    assert msgspec.json.decode(msgspec.json.encode(st), type=BreakerState) == st
    assert msgspec.json.decode(msgspec.json.encode(CFG), type=BreakerConfig) == CFG
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"open_s": 0}', type=BreakerConfig)
