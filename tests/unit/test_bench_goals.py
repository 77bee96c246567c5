from bench.goals import Goal


def test_goal_line_and_direction():
    assert Goal("ratio", 0.95, 0.9).line() == "GOAL ratio measured=0.95 target=0.9 PASS"
    assert not Goal("ratio", 0.85, 0.9).passed
    assert Goal("p99_ms", 12.0, 50, higher_is_better=False).passed
    assert Goal("p99_ms", 51.0, 50, higher_is_better=False).line().endswith("FAIL")
