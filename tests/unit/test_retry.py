"""Retry policy: schedule, jitter bounds, throttle floor, Retry-After clamp, dead letters, JSON."""

from __future__ import annotations

import random

import pytest

from dispatcher.classify import Outcome
from dispatcher.retry import RetryPolicy, RetryPolicyError, max_attempts, next_delay
from whk.errors import WhkError

RETRY = Outcome(kind="retry", reason="http 500")
THROTTLE = Outcome(kind="throttle", reason="http 429")
BLOCKED = Outcome(kind="blocked", reason="ssrf_blocked: loopback")
# The seeded 'retry.policy' schedule (Svix's); the policy itself always comes from the database.
SVIX = (5, 300, 1800, 7200, 18000, 36000, 36000)


def svix(**over: object) -> RetryPolicy:
    return RetryPolicy(schedule_s=SVIX, **over)  # type: ignore[arg-type]


def throttle(after: float) -> Outcome:
    return Outcome(kind="throttle", retry_after_s=after, reason="http 429")


def test_defaults_have_no_schedule_of_their_own() -> None:
    """The schedule lives in the database only ('retry.policy'): without one the first failure is final."""
    policy = RetryPolicy()
    assert policy.schedule_s == () and max_attempts(policy) == 1
    assert next_delay(policy, 1, RETRY, random.Random(0)) is None
    assert policy.jitter == 0.2 and policy.throttle_floor_s == 60 and policy.retry_after_cap_factor == 2
    assert max_attempts(svix()) == 8


def test_without_jitter_the_schedule_is_exact() -> None:
    policy = svix(jitter=0)
    rng = random.Random(0)
    assert [next_delay(policy, n, RETRY, rng) for n in range(1, 9)] == [*SVIX, None]


@pytest.mark.parametrize("seed", range(20))
def test_jitter_stays_within_20_percent(seed: int) -> None:
    policy = svix()
    rng = random.Random(seed)
    for n, base in enumerate(SVIX, start=1):
        delay = next_delay(policy, n, RETRY, rng)
        assert delay is not None
        assert base * 0.8 <= delay <= base * 1.2


def test_jitter_actually_spreads() -> None:
    rng = random.Random(42)
    delays = {next_delay(svix(), 2, RETRY, rng) for _ in range(100)}
    assert len(delays) > 90
    assert min(d for d in delays if d is not None) < 270 and max(d for d in delays if d is not None) > 330


def test_dead_letter_after_the_last_step() -> None:
    policy = svix()
    rng = random.Random(0)
    assert next_delay(policy, 7, RETRY, rng) is not None
    assert next_delay(policy, 8, RETRY, rng) is None
    assert next_delay(policy, 100, RETRY, rng) is None


def test_empty_schedule_means_one_attempt() -> None:
    policy = RetryPolicy(schedule_s=())
    assert max_attempts(policy) == 1
    assert next_delay(policy, 1, RETRY, random.Random(0)) is None


class TestThrottle:
    def test_floor_applies(self) -> None:
        rng = random.Random(0)
        for _ in range(50):
            assert next_delay(svix(), 1, THROTTLE, rng) == 60  # 5 s step lifted to the floor

    def test_above_the_floor_the_schedule_rules(self) -> None:
        rng = random.Random(0)
        delay = next_delay(svix(), 2, THROTTLE, rng)
        assert delay is not None and 240 <= delay <= 360

    def test_compressed_floor_for_tests(self) -> None:
        policy = RetryPolicy(schedule_s=(0.05, 0.1), throttle_floor_s=0.2, jitter=0)
        assert next_delay(policy, 1, THROTTLE, random.Random(0)) == 0.2
        assert next_delay(policy, 1, RETRY, random.Random(0)) == 0.05
        zero = RetryPolicy(schedule_s=(0.05,), throttle_floor_s=0, jitter=0)
        assert next_delay(zero, 1, THROTTLE, random.Random(0)) == 0.05

    @pytest.mark.parametrize(
        ("after", "low", "high"),
        [
            (0, 60, 72),  # sooner than our floor: the floor wins (spread upwards only)
            (30, 60, 72),
            (90, 90, 108),  # honoured (plus upward jitter), within the clamp
            (120, 120, 120),  # exactly the cap
            (100000, 120, 120),  # a week-long Retry-After is capped at 2 x 60 s
        ],
    )
    def test_retry_after_clamp_first_step(self, after: float, low: float, high: float) -> None:
        rng = random.Random(7)
        for _ in range(30):
            delay = next_delay(svix(), 1, throttle(after), rng)
            assert delay is not None
            assert low <= delay <= high

    def test_retry_after_clamp_later_step(self) -> None:
        rng = random.Random(3)
        # step 4 = 7200 s: Retry-After of 10 s waits at least the scheduled 2 h, at most 4 h
        delay = next_delay(svix(), 4, throttle(10), rng)
        assert delay is not None and 7200 <= delay <= 8640
        assert next_delay(svix(), 4, throttle(10**9), rng) == 14400
        delay = next_delay(svix(), 4, throttle(10000), rng)
        assert delay is not None and 10000 <= delay <= 12000

    def test_cap_factor_configurable(self) -> None:
        policy = svix(retry_after_cap_factor=5)
        assert next_delay(policy, 1, throttle(10**6), random.Random(0)) == 300

    def test_throttle_dead_letters_too(self) -> None:
        assert next_delay(svix(), 8, throttle(1), random.Random(0)) is None


class TestBlocked:
    def test_blocked_follows_the_schedule_by_default(self) -> None:
        policy = svix(jitter=0)
        delays = [next_delay(policy, n, BLOCKED, random.Random(0)) for n in range(1, 9)]
        assert delays == [*SVIX, None]

    def test_blocked_can_dead_letter_at_once(self) -> None:
        assert next_delay(svix(retry_blocked=False), 1, BLOCKED, random.Random(0)) is None
        assert next_delay(svix(retry_blocked=False), 1, RETRY, random.Random(0)) == pytest.approx(5, rel=0.2)


@pytest.mark.parametrize("kind", ["delivered", "awaiting_ack", "gone"])
def test_final_outcomes_are_not_retried(kind: str) -> None:
    with pytest.raises(ValueError, match="final"):
        next_delay(svix(), 1, Outcome(kind=kind), random.Random(0))  # type: ignore[arg-type]


def test_attempts_made_must_be_positive() -> None:
    with pytest.raises(ValueError, match="attempts_made"):
        next_delay(svix(), 0, RETRY, random.Random(0))


def test_seeded_rng_is_deterministic() -> None:
    a = [next_delay(svix(), n, RETRY, random.Random(9)) for n in range(1, 8)]
    b = [next_delay(svix(), n, RETRY, random.Random(9)) for n in range(1, 8)]
    assert a == b


class TestValidation:
    @pytest.mark.parametrize(
        "kwargs",
        [
            {"schedule_s": (0,)},
            {"schedule_s": (-1,)},
            {"schedule_s": (float("inf"),)},
            {"schedule_s": (float("nan"),)},
            {"schedule_s": (31 * 86400,)},
            {"schedule_s": tuple([1.0] * 51)},
            {"jitter": -0.1},
            {"jitter": 1.0},
            {"jitter": float("nan")},
            {"throttle_floor_s": -1},
            {"throttle_floor_s": 86401},
            {"retry_after_cap_factor": 0.5},
            {"retry_after_cap_factor": 101},
        ],
    )
    def test_invalid_values(self, kwargs: dict[str, object]) -> None:
        with pytest.raises(ValueError):
            RetryPolicy(**kwargs)  # type: ignore[arg-type]
        with pytest.raises(RetryPolicyError):
            RetryPolicy.from_json({k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()})


class TestJson:
    def test_round_trip(self) -> None:
        policy = RetryPolicy(schedule_s=(1, 2, 3), jitter=0.1, throttle_floor_s=0.5, retry_blocked=False)
        assert RetryPolicy.from_json(policy.to_json()) == policy
        assert policy.to_json() == {
            "schedule_s": [1, 2, 3],
            "jitter": 0.1,
            "throttle_floor_s": 0.5,
            "retry_after_cap_factor": 2.0,
            "retry_blocked": False,
        }

    def test_members_left_out_take_the_field_defaults(self) -> None:
        assert RetryPolicy.from_json({"jitter": 0}) == RetryPolicy(jitter=0)
        assert RetryPolicy.from_json(None) == RetryPolicy()
        assert RetryPolicy.from_json({"schedule_s": [10, 20]}) == RetryPolicy(schedule_s=(10, 20))

    @pytest.mark.parametrize(
        "obj",
        [
            {"schedule": [1]},
            {"schedule_s": "5,10"},
            {"schedule_s": [1, "x"]},
            {"jitter": "0.2"},
            {"retry_blocked": "yes"},
        ],
    )
    def test_bad_json(self, obj: dict[str, object]) -> None:
        with pytest.raises(RetryPolicyError) as info:
            RetryPolicy.from_json(obj)
        assert isinstance(info.value, WhkError)
        assert info.value.hint
