"""``whk tail`` against real PostgreSQL: live attempts from a real dispatcher, filters, a late commit below
the cursor, and the command itself."""

from __future__ import annotations

import io
import json
import os
import subprocess
from typing import Any

import psycopg
import pytest

from tests.support.delivery import emit, make_consumer, make_webhook, route, statuses
from tests.support.dispatch import REPO, WHK, compress_schedule, fast_settings, running
from tests.support.receiver import Reply, receiver, wait_until
from whk_cli.tail import Filters, Tailer

pytestmark = [pytest.mark.db]
__all__ = ["receiver"]  # the fixture, imported


async def test_tail_follows_live_deliveries_with_filters(
    db_url: str, conn: psycopg.Connection[Any], receiver: Any
) -> None:
    compress_schedule(conn, [30])
    c = make_consumer(conn)
    ok = make_webhook(conn, c, receiver.url("/ok"), ["order.*", "invoice.*"])
    bad = make_webhook(conn, c, receiver.url("/bad"), ["order.*"])
    receiver.on("/bad", default=Reply(status=503))
    everything, failed, invoices = io.StringIO(), io.StringIO(), io.StringIO()
    tailers = [
        Tailer(conn, Filters(), everything),
        Tailer(conn, Filters(statuses=frozenset({"failed"}), webhooks=frozenset({bad})), failed),
        Tailer(conn, Filters(event_types=("invoice.*",)), invoices, as_json=True),
    ]
    (order,) = emit(conn, "order.created")
    (invoice,) = emit(conn, "invoice.paid")
    async with running(fast_settings(db_url)):
        assert await wait_until(lambda: statuses(conn, ok) == {"delivered": 2}, 10)
        assert await wait_until(lambda: statuses(conn, bad) == {"pending": 1}, 10)

        def polled() -> bool:
            for t in tailers:
                t.poll()
            return len(everything.getvalue().splitlines()) >= 3

        assert await wait_until(polled, 10)
    lines = everything.getvalue().splitlines()
    assert len(lines) == 3
    assert sum("delivered" in x and f"webhook {ok} " in x for x in lines) == 2
    (bad_line,) = [x for x in lines if f"webhook {bad} " in x]
    assert "throttle" in bad_line and "503" in bad_line and order in bad_line and "order.created" in bad_line
    assert failed.getvalue().splitlines() == [bad_line]
    (as_json,) = [json.loads(x) for x in invoices.getvalue().splitlines()]
    assert (as_json["event_id"], as_json["webhook_id"], as_json["outcome"]) == (invoice, ok, "delivered")
    assert as_json["duration_ms"] > 0


def _attempt(cur: psycopg.Connection[Any], delivery_id: int, webhook_id: int) -> int:
    row = cur.execute(
        "INSERT INTO whk.whk_03_entregas_tentativas "
        "(delivery_id, webhook_id, attempt_no, request_method, request_url, outcome, response_status) "
        "VALUES (%s, %s, 1, 'POST', 'http://127.0.0.1:9/', 'delivered', 200) RETURNING id",
        [delivery_id, webhook_id],
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_flush_committing_late_below_the_cursor_is_shown(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    c = make_consumer(conn)
    hook = make_webhook(conn, c, "http://127.0.0.1:9/", ["*"])
    emit(conn, "a.b", count=2)
    route(conn)
    first, second = (r[0] for r in conn.execute("SELECT id FROM whk.whk_03_entregas ORDER BY id").fetchall())
    out = io.StringIO()
    tailer = Tailer(conn, Filters(), out)
    with psycopg.connect(db_url) as slow:
        low = _attempt(slow, first, hook)  # an id taken, not committed yet
        high = _attempt(conn, second, hook)  # autocommit: visible at once
        assert low < high
        assert tailer.poll()[0] == 1
        assert f"delivery {second}#1" in out.getvalue()
        slow.commit()
    assert tailer.poll()[0] == 1
    assert f"delivery {first}#1" in out.getvalue().splitlines()[1]
    assert tailer.poll()[0] == 0  # each attempt is shown once
    assert tailer.cursor.position == high


def test_whk_tail_command(db_url: str, conn: psycopg.Connection[Any]) -> None:
    c = make_consumer(conn)
    hook = make_webhook(conn, c, "http://127.0.0.1:9/", ["*"])
    emit(conn, "a.b", count=3)
    route(conn)
    ids = [r[0] for r in conn.execute("SELECT id FROM whk.whk_03_entregas ORDER BY id").fetchall()]
    for delivery_id in ids:
        _attempt(conn, delivery_id, hook)
    conn.execute(
        "UPDATE whk.whk_03_entregas_tentativas SET response_status = 502, outcome = 'throttle' "
        "WHERE delivery_id = %s",
        [ids[0]],
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    env["WHK_DATABASE_URL"] = db_url
    done = subprocess.run(
        [str(WHK), "tail", "--once", "--last", "10", "--json", "--status", "5xx"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = [json.loads(x) for x in done.stdout.splitlines()]
    assert [(r["delivery_id"], r["response_status"], r["event_type"]) for r in rows] == [(ids[0], 502, "a.b")]
