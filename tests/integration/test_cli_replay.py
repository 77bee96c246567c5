"""`whk replay`: dry run counts, an old range is one line naming the horizon, and a real replay is followed
to the end with a progress bar while `whk worker` works it through."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.integration.test_cli import assert_one_line_error, run
from tests.support import delivery
from tests.support.ops import start_worker
from whk_cli.replay import parse_when

pytestmark = pytest.mark.db


def test_parse_when_takes_iso_and_durations_ago() -> None:
    now = parse_when("2026-12-07T12:00:00+00:00")
    assert parse_when("2026-12-07T12:00:00") == now  # no zone: UTC
    assert (now - parse_when("90m", now=now)).total_seconds() == 5400
    assert (now - parse_when("7d", now=now)).days == 7


@pytest.mark.slow  # `whk` subprocesses
def test_replay_from_the_shell(db_url: str, conn: psycopg.Connection[Any]) -> None:
    consumer = delivery.make_consumer(conn)
    hook = delivery.make_webhook(conn, consumer, "http://127.0.0.1:9/none", ["order.*"])
    delivery.emit(conn, "order.created", {"total": 500}, count=3)
    delivery.emit(conn, "order.created", {"total": 5}, count=2)
    delivery.route(conn)
    conn.execute("DELETE FROM whk.delivery_queue WHERE webhook_id = %s", (hook,))
    env = {"WHK_DATABASE_URL": db_url}
    args = ["replay", str(hook), "--since", "1h", "--where", "$.data.total > 100"]
    dry = run(*args, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "would replay 3 events" in dry.stdout
    conn.execute("UPDATE whk.whk_05_configuracoes SET value = '7' WHERE key = 'retention.outbox_days'")
    old = run("replay", str(hook), "--since", "8d", env=env)
    assert_one_line_error(old, "retention horizon")
    worker = start_worker(db_url)
    try:
        done = run(*args, "--interval", "0.2", env=env)
    finally:
        worker.terminate()
        worker.wait(30)
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert "done" in last
    assert "3/3" in last
    assert "#" * 30 in last
    n = conn.execute("SELECT count(*) FROM whk.whk_03_entregas WHERE webhook_id = %s", (hook,)).fetchone()
    assert n == (3,)
