"""`whk up`'s restart policy (pure): backoff, the crash window, failing and recovering; exit causes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from whk.pgserver import first_blocked_directory
from whk.supervisor import CrashHistory, RestartPolicy, describe_exit

POLICY = RestartPolicy(initial_delay=0.5, max_delay=30.0, max_crashes=5, window=60.0)


def test_backoff_doubles_up_to_the_cap():
    assert [POLICY.backoff(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert POLICY.backoff(10_000) == 30.0


def test_a_lone_crash_restarts_after_the_initial_delay():
    h = CrashHistory(POLICY)
    assert h.on_exit(now=100.0, started_at=10.0) == 0.5
    assert not h.failing


def test_crashes_within_the_window_back_off_then_fail_at_n():
    h = CrashHistory(POLICY)
    t, delays = 0.0, []
    for _ in range(4):
        delays.append(h.on_exit(now=t + 1, started_at=t))
        assert not h.failing
        t += 1 + delays[-1]
    assert delays == [0.5, 1, 2, 4]
    # The fifth crash within 60 s: failing, retried only every max_delay.
    assert h.on_exit(now=t + 1, started_at=t) == 30.0
    assert h.failing
    assert h.in_window(t + 1) == 5
    # Failing is sticky: a quick crash after the slow retry keeps it failing (no flapping).
    t += 31
    assert h.on_exit(now=t + 1, started_at=t) == 30.0
    assert h.failing


def test_crashes_spread_wider_than_the_window_never_fail():
    h = CrashHistory(POLICY)
    for i in range(20):
        now = i * 20.0  # three crashes per window at most
        h.on_exit(now=now + 1, started_at=now)
        assert not h.failing
    assert h.in_window(20 * 20.0) <= 3


def test_a_child_that_ran_a_whole_window_starts_a_fresh_count():
    h = CrashHistory(POLICY)
    for i in range(4):
        h.on_exit(now=float(i), started_at=float(i))
    assert h.on_exit(now=200.0, started_at=100.0) == 0.5
    assert h.in_window(200.0) == 1


def test_failing_ends_after_a_whole_window_up():
    h = CrashHistory(POLICY)
    for i in range(5):
        h.on_exit(now=float(i), started_at=float(i))
    assert h.failing
    assert h.on_alive(now=50.0, started_at=35.0) is False
    assert h.failing
    assert h.on_alive(now=95.0, started_at=35.0) is True
    assert not h.failing
    assert h.crashes == []
    assert h.on_alive(now=200.0, started_at=35.0) is False  # reported once


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (-9, "killed by signal 9 (SIGKILL)"),
        (-15, "killed by signal 15 (SIGTERM)"),
        (1, "exited with code 1"),
        (0, "exited with code 0"),
        (-250, "killed by signal 250"),
    ],
)
def test_exit_causes_read_like_an_operator_says_them(code: int, text: str):
    assert describe_exit(code) == text


def _fake_stat(modes: dict[str, tuple[int, int, int]]):  # type: ignore[no-untyped-def]
    def stat_fn(path: Path) -> os.stat_result:
        mode, uid, gid = modes[str(path)]
        return os.stat_result((stat.S_IFDIR | mode, 0, 0, 2, uid, gid, 0, 0, 0, 0))

    return stat_fn


def test_first_blocked_directory_names_the_0700_parent():
    modes = {
        "/": (0o755, 0, 0),
        "/tmp": (0o1777, 0, 0),
        "/tmp/tmp.x": (0o700, 0, 0),
        "/tmp/tmp.x/d": (0o700, 70, 70),
    }
    fake = _fake_stat(modes)
    assert first_blocked_directory(Path("/tmp/tmp.x/d"), 70, {70}, fake) == Path("/tmp/tmp.x")
    # Owner, group and other bits each apply to their own kind of user; root passes everywhere.
    modes["/tmp/tmp.x"] = (0o710, 0, 70)
    assert first_blocked_directory(Path("/tmp/tmp.x/d"), 70, {70}, fake) is None
    assert first_blocked_directory(Path("/tmp/tmp.x/d"), 71, {71}, fake) == Path("/tmp/tmp.x")
    modes["/tmp/tmp.x"] = (0o601, 71, 0)
    assert first_blocked_directory(Path("/tmp/tmp.x/d"), 71, {71}, fake) == Path("/tmp/tmp.x")
    assert first_blocked_directory(Path("/tmp/tmp.x/d"), 70, {70}, fake) is None
    assert first_blocked_directory(Path("/tmp/tmp.x/d"), 0, {0}, fake) is None
