from bench.deliver import cpu_line


def test_cpu_line_gives_each_process_per_event_the_total_and_the_cores_kept_busy():
    used = {"dispatcher": 0.5, "postgres": 0.4, "receiver": 0.1}  # CPU seconds over 0.8 s of wall time
    assert cpu_line(used, 1000, 0.8) == "dispatcher=500 postgres=400 receiver=100 total=1000 cores_busy=1.25"


def test_cpu_line_survives_an_empty_run():
    assert cpu_line({"client": 0.0}, 0, 0.0) == "client=0 total=0 cores_busy=0.00"
