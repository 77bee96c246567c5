"""`whk worker` (and `whk dispatcher` with its worker) as subprocesses under faults: the dispatcher is
killed while a separate worker keeps evaluating; two workers share the schedules; a worker is killed while
notifications are queued. Real PostgreSQL, real receivers on 127.0.0.1, bounded waits."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import port_for
import psutil
import psycopg
import pytest
from standardwebhooks.webhooks import Webhook

from tests.support.delivery import make_consumer
from tests.support.dispatch import WHK, start_process, stop_process
from tests.support.ops import alert_row, channel, disable_builtins, history, rule, start_worker
from tests.support.receiver import Reply, receiver, wait_until
from tests.support.resources import make_delivery, make_webhook

pytestmark = [pytest.mark.db, pytest.mark.e2e, pytest.mark.slow]
__all__ = ["receiver"]

SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="


def runs(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT worker, started_at, detail ->> 'next_run' FROM whk.ops_job_runs "
        "WHERE job = 'evaluate_alerts' AND ok ORDER BY started_at"
    ).fetchall()


async def test_no_live_dispatcher_fires_from_the_separate_worker(db_url, conn, receiver):
    disable_builtins(conn)
    hook = channel(conn, "webhook", receiver.url("/oncall"), secret=SECRET)
    conn.execute(
        "UPDATE whk.whk_06_alertas SET enabled = true, for_s = 0, channels = %s "
        "WHERE builtin = 'no_live_dispatcher'",
        [json.dumps([{"channel_id": hook}])],
    )
    (alert,) = conn.execute(
        "SELECT id FROM whk.whk_06_alertas WHERE builtin = 'no_live_dispatcher'"
    ).fetchone()
    dispatcher = start_process(db_url, "doomed", WHK_DISPATCHER_RUN_JOBS="false")
    worker = start_worker(db_url)
    try:
        # The worker sees the live dispatcher first.
        assert await wait_until(lambda: alert_row(conn, alert)["last_value"] == 1.0, 30)
        assert alert_row(conn, alert)["state"] == "ok"
        dispatcher.send_signal(signal.SIGKILL)
        dispatcher.wait(10)
        assert await wait_until(lambda: alert_row(conn, alert)["state"] == "firing", 40)
        assert await wait_until(lambda: len(receiver.to("/oncall")) == 1, 20)
        event = Webhook(SECRET).verify(receiver.to("/oncall")[0].body, receiver.to("/oncall")[0].headers)
        assert event["type"] == "whk.alert.firing"
        assert event["data"]["metric"] == "live_dispatchers" and event["data"]["value"] == 0
        # Within 3 evaluation periods of the lease running out: the runs that started after the last
        # heartbeat's lease ended, up to and including the one that fired, are at most 3.
        (lease_end,) = conn.execute(
            "SELECT heartbeat_at + interval '6 seconds' FROM whk.dispatchers WHERE id = 'doomed'"
        ).fetchone()
        (fired_at,) = conn.execute(
            "SELECT firing_since FROM whk.whk_06_alertas WHERE id = %s", [alert]
        ).fetchone()
        between = [r for r in runs(conn) if lease_end < r[1] <= fired_at]
        assert 1 <= len(between) <= 3, between
    finally:
        stop_process(dispatcher)
        assert stop_process(worker) == 0


async def test_two_workers_run_each_scheduled_evaluation_once_per_period(db_url, conn):
    a = start_worker(db_url)
    b = start_worker(db_url)
    try:
        assert await wait_until(lambda: len(runs(conn)) >= 10, 60)
    finally:
        assert stop_process(a) == 0
        assert stop_process(b) == 0
    done = runs(conn)
    ticks = [r[2] for r in done]
    # One pick per tick of the schedule: every run advanced it to a later tick, none ran twice for one.
    assert len(set(ticks)) == len(ticks)
    assert ticks == sorted(ticks)
    assert len({r[0] for r in done}) >= 1


async def test_notifications_queued_when_the_worker_is_killed_are_sent_by_the_next_one(
    db_url, conn, receiver
):
    """Kill -9 the worker right after a transition was committed: the job survives in the queue (the state
    change and its jobs commit together) and another worker sends it exactly once."""
    disable_builtins(conn)
    receiver.on("/slow", default=Reply(status=200, delay_s=30))
    c = make_consumer(conn)
    hook = make_webhook(conn, c)
    slow = channel(conn, "webhook", receiver.url("/slow"), secret=SECRET)
    alert = rule(
        conn,
        {"metric": "failure_rate", "operator": ">", "threshold": 0.5, "window_s": 300, "webhook_id": hook},
        channels=[slow],
        for_s=0,
        throttle_s=3600,
    )
    first = start_worker(db_url, WHK_NOTIFY_TIMEOUT_S="60")
    try:
        make_delivery(conn, hook, status="dead", attempts=3)
        # The notice is being sent (the receiver holds it): kill the worker mid-job.
        assert await wait_until(lambda: len(receiver.to("/slow")) == 1, 30)
        psutil.Process(first.pid).kill()
        first.wait(10)
    finally:
        stop_process(first)
    receiver.defaults["/slow"] = Reply(status=200)
    second = start_worker(db_url, WHK_JOB_HEARTBEAT_TIMEOUT_S="2")
    try:
        assert await wait_until(
            lambda: any(n["status"] == "sent" for n in history(conn, alert)[0]["notified"]), 60
        )
    finally:
        assert stop_process(second) == 0
    assert alert_row(conn, alert)["trigger_count"] == 1
    (h,) = history(conn, alert)
    assert [n["status"] for n in h["notified"]] == ["sent"]
    # At least once: the killed attempt reached the receiver, the retry too; both carry one webhook-id.
    ids = {r.headers["webhook-id"] for r in receiver.to("/slow")}
    assert len(ids) == 1 and len(receiver.to("/slow")) == 2


def test_make_up_runs_the_jobs_and_the_demo_channel_receives_a_test_alert():
    """`whk up` (what `make up` runs): the dispatcher starts the operations worker, the built-in rules are
    on with the demo channel (the dev mock endpoint), and a test notification arrives there signed."""
    data_dir = Path(tempfile.mkdtemp(prefix="whk-up-ops-"))
    port = port_for.select_random()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    env.update(
        {
            "WHK_DATA_DIR": str(data_dir),
            "WHK_API_PORT": str(port),
            "WHK_ALLOW_PRIVATE_CIDRS": "127.0.0.0/8",
            "WHK_SHUTDOWN_GRACE": "3",
            "WHK_ALERT_EVAL_EVERY_S": "1",
        }
    )
    proc = subprocess.Popen(
        [str(WHK), "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    base = f"http://127.0.0.1:{port}/api/whk"
    try:
        deadline = time.monotonic() + 90
        key = None
        while time.monotonic() < deadline and key is None:
            assert proc.poll() is None, "".join(lines)
            key = next((ln.split(": ", 1)[1].strip() for ln in lines if ln.startswith("Admin API key")), None)
            time.sleep(0.2)
        assert key, "".join(lines)
        auth = {"Authorization": f"Bearer {key}"}
        assert any("Alerts:  built-in rules notify" in ln for ln in lines)

        def health() -> dict[str, Any]:
            try:
                return httpx.get(f"{base}/monitoring/health", timeout=2).json()
            except (httpx.TransportError, ValueError):
                return {}

        # The worker inside `whk dispatcher` runs the evaluation schedule.
        while time.monotonic() < deadline and not any(
            s["job"] == "evaluate_alerts" for s in health().get("schedulers", [])
        ):
            time.sleep(0.3)
        assert any(s["job"] == "evaluate_alerts" and not s["stale"] for s in health()["schedulers"])
        rules = httpx.get(f"{base}/monitoring/alerts", params={"limit": 200}, headers=auth, timeout=5).json()
        builtins = {a["builtin"]: a for a in rules["items"] if a["builtin"]}
        assert set(builtins) == {
            "no_live_dispatcher",
            "backlog_old",
            "dead_letters",
            "webhook_disabled",
            "webhook_needs_secret",
            "breaker_open",
        }
        assert all(a["enabled"] and len(a["channels"]) == 1 for a in builtins.values())
        alert = builtins["no_live_dispatcher"]
        r = httpx.post(f"{base}/monitoring/alerts/{alert['id']}/test", headers=auth, timeout=5)
        assert r.status_code == 202, r.text
        received: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not received:
            received = httpx.get(f"{base}/dev/mock/alerts/requests", headers=auth, timeout=5).json()
            time.sleep(0.3)
        (got,) = received
        assert json.loads(got["body"])["type"] == "whk.alert.test"
        assert got["headers"]["webhook-signature"].startswith("v1,")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        finally:
            reader.join(timeout=5)
            if proc.stdout is not None:
                proc.stdout.close()
            shutil.rmtree(data_dir, ignore_errors=True)
    assert proc.returncode == 0, "".join(lines)


async def test_the_dispatcher_runs_the_worker_and_takes_it_down_with_it(db_url, conn):
    dispatcher = start_process(
        db_url, "with-jobs", WHK_DISPATCHER_RUN_JOBS="true", WHK_ALERT_EVAL_EVERY_S="1"
    )
    try:
        assert await wait_until(lambda: len(runs(conn)) >= 1, 60)
        (child,) = psutil.Process(dispatcher.pid).children()
        assert child.cmdline()[-1] == "worker"
        dispatcher.send_signal(signal.SIGKILL)  # no chance to stop it: the kernel's parent-death signal does
        dispatcher.wait(10)
        child.wait(30)
        assert not child.is_running()
    finally:
        stop_process(dispatcher)


async def test_a_worker_killed_mid_evaluation_loses_no_activation_and_pages_once(db_url, conn, receiver):
    disable_builtins(conn)
    c = make_consumer(conn)
    hook = make_webhook(conn, c)
    page = channel(conn, "webhook", receiver.url("/page"), secret=SECRET)
    alert = rule(
        conn,
        {"metric": "failure_rate", "operator": ">", "threshold": 0.5, "window_s": 300, "webhook_id": hook},
        channels=[page],
        for_s=0,
        throttle_s=3600,
    )
    make_delivery(conn, hook, status="dead", attempts=3)
    with psycopg.connect(db_url) as blocker:
        # Hold the history table: the evaluation locks the rules, decides to fire, and waits to write.
        blocker.execute("LOCK TABLE whk.whk_06_alertas_historico IN ACCESS EXCLUSIVE MODE")
        first = start_worker(db_url)
        try:

            def stuck() -> bool:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%%whk_06_alertas_historico%%' AND pid <> pg_backend_pid()"
                ).fetchone()
                return bool(row and row[0])

            assert await wait_until(stuck, 30)
            psutil.Process(first.pid).kill()
            first.wait(10)
        finally:
            stop_process(first)
        blocker.rollback()
    # Nothing of the interrupted evaluation was committed.
    assert alert_row(conn, alert)["state"] == "ok" and history(conn, alert) == []
    second = start_worker(db_url)
    try:
        # The schedule the killed worker held is picked again once its heartbeat is stale (pgqueuer: 30 s).
        assert await wait_until(lambda: len(receiver.to("/page")) == 1, 90)
        assert await wait_until(lambda: len(runs(conn)) >= 3, 30)
    finally:
        assert stop_process(second) == 0
    assert alert_row(conn, alert)["state"] == "firing" and alert_row(conn, alert)["trigger_count"] == 1
    assert len(history(conn, alert)) == 1
    assert len(receiver.to("/page")) == 1
