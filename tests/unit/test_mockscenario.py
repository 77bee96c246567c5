"""The scenario format shared by the development mock endpoints and whk.testing's receiver."""

from __future__ import annotations

import msgspec
import pytest

from whk.mockscenario import Reply, Scenario, Step, decode_scenario, random_unit, reply_for


def test_steps_then_the_default_answer():
    s = decode_scenario([503, 503, {"status": 200, "delay_ms": 300}])
    assert [reply_for(s, n) for n in range(4)] == [
        Reply(status=503),
        Reply(status=503),
        Reply(status=200, delay_ms=300),
        Reply(status=200),
    ]


def test_then_can_be_a_step_with_a_drip():
    s = decode_scenario(b'{"then": {"status": 202, "drip_ms": 2000}}')
    assert reply_for(s, 0) == Reply(status=202, drip_ms=2000)
    assert reply_for(s, 57) == Reply(status=202, drip_ms=2000)


def test_random_failures_are_reproducible_and_close_to_the_rate():
    s = Scenario(fail_rate=0.2, fail_status=500, seed=7)
    first = [reply_for(s, n).status for n in range(2000)]
    assert first == [reply_for(s, n).status for n in range(2000)]  # same seed, same answers
    assert set(first) == {200, 500}
    assert 300 <= first.count(500) <= 500  # 20 % of 2,000, within a wide margin
    other = [reply_for(Scenario(fail_rate=0.2, fail_status=500, seed=8), n).status for n in range(2000)]
    assert other != first
    assert all(reply_for(Scenario(fail_rate=1.0), n).status == 503 for n in range(50))
    assert all(reply_for(Scenario(fail_rate=0.0), n).status == 200 for n in range(50))


def test_random_unit_is_in_the_unit_interval():
    values = [random_unit(3, n) for n in range(1000)]
    assert all(0 <= v < 1 for v in values)
    assert random_unit(3, 10) == random_unit(3, 10)


def test_steps_come_before_the_random_failures():
    s = Scenario(steps=[Step(status=201)], fail_rate=1.0)
    assert reply_for(s, 0).status == 201
    assert reply_for(s, 1).status == 503


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ([42], "steps[0]"),
        ([{"status": 200, "delay_ms": 30001}], "delay_ms"),
        ([{"status": 200, "drip_ms": -1}], "drip_ms"),
        ('{"fail_rate": 1.5}', "fail_rate"),
        ('{"fail_rate": -0.1}', "fail_rate"),
        ('{"seed": -1}', "seed"),
        ('{"then": 600}', "then"),
        ('{"steps": [' + ",".join(["200"] * 101) + "]}", "steps"),
        ('{"unknown": 1}', "unknown"),
    ],
)
def test_out_of_bounds_is_refused_naming_the_field(raw: object, field: str):
    with pytest.raises(msgspec.ValidationError, match=field.replace("[", r"\[").replace("]", r"\]")):
        decode_scenario(raw)  # type: ignore[arg-type]


def test_negative_request_numbers_are_refused():
    with pytest.raises(ValueError, match="start at 0"):
        reply_for(Scenario(), -1)
