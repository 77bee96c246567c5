"""The supervisor with real child processes and a controlled clock: a crashing child is restarted with
backoff and marked failing after 5 crashes in 60 s; its sibling keeps running untouched; stop ends both."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable

from whk.supervisor import ChildSpec, RestartPolicy, Supervisor


def test_crashing_child_backs_off_then_fails_while_its_sibling_runs():
    now = [1000.0]
    lines: list[str] = []
    env = dict(os.environ)
    crasher = ChildSpec("crasher", [sys.executable, "-c", "import sys; sys.exit(3)"], env)
    steady = ChildSpec("steady", [sys.executable, "-c", "import time; time.sleep(120)"], env)
    sup = Supervisor(
        [crasher, steady],
        policy=RestartPolicy(initial_delay=0.5, max_delay=30, max_crashes=5, window=60),
        echo=lines.append,
        clock=lambda: now[0],
    )

    def tick_until(cond: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 30
        while not cond():
            assert time.monotonic() < deadline, lines
            sup.tick()
            time.sleep(0.02)

    sup.start()
    steady_pid = sup.pid("steady")
    assert steady_pid is not None
    try:
        delays = []
        for n in range(1, 6):
            tick_until(lambda n=n: sum("`whk crasher` exited with code 3" in line for line in lines) == n)
            found = re.search(r"(?:restarting in|retrying every) ([\d.]+) s", lines[-1])
            assert found, lines[-1]
            delays.append(float(found.group(1)))
            if n < 5:
                now[0] += delays[-1]  # the backoff elapses
                tick_until(lambda: sup.pid("crasher") is not None or "restarted" in lines[-1])
        assert delays == [0.5, 1, 2, 4, 30]
        assert "FAILING: 5 crashes within 60 s, retrying every 30 s" in lines[-1]
        (crash_status,) = [s for s in sup.statuses() if s.name == "crasher"]
        assert (crash_status.state, crash_status.restarts, crash_status.last_exit) == (
            "failing",
            4,
            "exited with code 3",
        )
        assert sup.pid("steady") == steady_pid  # the sibling was never touched
        # Not restarted before its slow retry is due, then restarted.
        restarts = sum("restarted `whk crasher`" in line for line in lines)
        now[0] += 29
        sup.tick()
        assert sum("restarted `whk crasher`" in line for line in lines) == restarts
        now[0] += 1
        sup.tick()
        assert sum("restarted `whk crasher`" in line for line in lines) == restarts + 1
    finally:
        sup.stop(grace=10)
    assert sup.pid("steady") is None
