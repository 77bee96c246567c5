"""Replay in SQL: one delivery (one webhook-id) per (event, webhook) forever, the webhook's subscription
and the predicate honoured, batches with progress, cancel, and the retention horizon."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.support.resources import make_webhook

pytestmark = pytest.mark.db


def consumer(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "INSERT INTO whk.whk_04_assinantes (name) VALUES ('c-' || gen_random_uuid()) RETURNING id"
    ).fetchone()
    assert row is not None
    return int(row[0])


def event(
    conn: psycopg.Connection[Any], event_type: str, data: dict[str, Any], hours_ago: float = 1
) -> uuid.UUID:
    ev = uuid.uuid4()
    conn.execute(
        "INSERT INTO whk.outbox (event_id, event_type, data, operation, status, routed_at, created_at)"
        " VALUES (%s, %s, %s, 'EMIT', 'routed', now(), now() - make_interval(secs => %s))",
        (ev, event_type, Jsonb(data), hours_ago * 3600),
    )
    return ev


def start(
    conn: psycopg.Connection[Any], hook: int, types: list[str] | None = None, where: str | None = None
) -> int:
    row = conn.execute(
        "SELECT whk.replay_start(%s, now() - interval '1 day', now(), %s, %s::jsonpath, 'test')",
        (hook, types or [], where),
    ).fetchone()
    assert row is not None
    return int(row[0])


def deliveries(conn: psycopg.Connection[Any], hook: int) -> dict[uuid.UUID, tuple[int, str]]:
    rows = conn.execute(
        "SELECT event_id, id, status FROM whk.whk_03_entregas WHERE webhook_id = %s", (hook,)
    ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def progress(conn: psycopg.Connection[Any], replay: int) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT state, done, total, created, requeued FROM whk.replays WHERE id = %s", (replay,)
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_replay_keeps_one_delivery_per_pair_and_honours_the_predicate(conn: psycopg.Connection[Any]) -> None:
    hook = make_webhook(conn, consumer(conn))
    conn.execute("UPDATE whk.whk_01_webhooks SET event_types = '{order.*}' WHERE id = %s", (hook,))
    big = event(conn, "order.created", {"total": 500})
    small = event(conn, "order.created", {"total": 5})
    shipped = event(conn, "order.shipped", {"total": 900})
    event(conn, "invoice.created", {"total": 900})  # not subscribed
    event(conn, "order.created", {"total": 900}, hours_ago=30)  # outside the range
    # `big` was delivered to the webhook before: the replay re-queues that very delivery.
    conn.execute(
        "INSERT INTO whk.delivery_queue (event_id, outbox_id, event_created_at, event_type, webhook_id,"
        " consumer_id, status, attempts, delivered_at)"
        " SELECT o.event_id, o.id, o.created_at, o.event_type, w.id, w.consumer_id, 'delivered', 1, now()"
        " FROM whk.outbox o, whk.whk_01_webhooks w WHERE o.event_id = %s AND w.id = %s",
        (big, hook),
    )
    before = deliveries(conn, hook)[big]
    replay = start(conn, hook, where="$.data.total > 100")
    assert progress(conn, replay) == ("queued", 0, 2, 0, 0)
    assert conn.execute("SELECT whk.replay_step(%s, 1)", (replay,)).fetchone() == (True,)
    assert conn.execute("SELECT whk.replay_step(%s, 1)", (replay,)).fetchone() == (True,)
    assert conn.execute("SELECT whk.replay_step(%s, 1)", (replay,)).fetchone() == (False,)
    assert progress(conn, replay) == ("done", 2, 2, 1, 1)
    after = deliveries(conn, hook)
    assert set(after) == {big, shipped}
    assert after[big] == (before[0], "pending")  # same row, same event_id: same webhook-id
    assert after[shipped][1] == "pending"
    assert small not in after
    # Again, with a type filter: nothing is duplicated, the existing rows are re-queued.
    again = start(conn, hook, types=["order.shipped"])
    while conn.execute("SELECT whk.replay_step(%s, 10)", (again,)).fetchone() == (True,):
        pass
    assert progress(conn, again) == ("done", 1, 1, 0, 1)
    assert deliveries(conn, hook) == after
    jobs = conn.execute("SELECT count(*) FROM whk.pgqueuer WHERE entrypoint = 'replay'").fetchone()
    assert jobs == (2,)


def test_cancel_stops_a_replay_between_batches(conn: psycopg.Connection[Any]) -> None:
    hook = make_webhook(conn, consumer(conn))
    for i in range(5):
        event(conn, "order.created", {"n": i})
    replay = start(conn, hook)
    assert conn.execute("SELECT whk.replay_step(%s, 2)", (replay,)).fetchone() == (True,)
    assert conn.execute("SELECT whk.replay_cancel(%s)", (replay,)).fetchone() == (True,)
    assert conn.execute("SELECT whk.replay_step(%s, 2)", (replay,)).fetchone() == (False,)
    assert progress(conn, replay) == ("cancelled", 2, 5, 2, 0)
    assert len(deliveries(conn, hook)) == 2
    assert conn.execute("SELECT whk.replay_cancel(%s)", (replay,)).fetchone() == (False,)


def test_a_range_older_than_the_outbox_retention_is_refused(conn: psycopg.Connection[Any]) -> None:
    hook = make_webhook(conn, consumer(conn))
    conn.execute("UPDATE whk.whk_05_configuracoes SET value = '7' WHERE key = 'retention.outbox_days'")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="retention horizon") as info:
        conn.execute(
            "SELECT whk.replay_start(%s, now() - interval '8 days', now(), '{}', NULL, 't')", (hook,)
        )
    assert (info.value.diag.message_detail or "").startswith("horizon=")
    assert conn.execute("SELECT count(*) FROM whk.replays").fetchone() == (0,)


def test_a_replay_to_a_webhook_deleted_meanwhile_stops_and_says_why(conn: psycopg.Connection[Any]) -> None:
    hook = make_webhook(conn, consumer(conn))
    event(conn, "order.created", {"n": 1})
    replay = start(conn, hook)
    conn.execute("SELECT whk.delete_webhook(%s)", (hook,))
    assert conn.execute("SELECT whk.replay_step(%s)", (replay,)).fetchone() == (False,)
    row = conn.execute("SELECT state, error, done FROM whk.replays WHERE id = %s", (replay,)).fetchone()
    assert row == ("failed", "the webhook was deleted", 0)
    assert deliveries(conn, hook) == {}


def test_the_sql_control_plane_replays_and_dry_runs(conn: psycopg.Connection[Any]) -> None:
    """whk.replay, the DBA's entry: dry_run counts with the same refusals and leaves no replay or job; the
    real call starts the job with the same total, recorded as the database role."""
    hook = make_webhook(conn, consumer(conn))
    conn.execute("UPDATE whk.whk_01_webhooks SET event_types = '{order.*}' WHERE id = %s", (hook,))
    event(conn, "order.created", {"total": 500})
    event(conn, "order.created", {"total": 5})
    event(conn, "invoice.created", {"total": 900})
    jobs = "SELECT count(*) FROM whk.pgqueuer WHERE entrypoint = 'replay'"
    jobs_before = conn.execute(jobs).fetchone()
    dry = conn.execute(
        "SELECT replay_id, total FROM whk.replay(%s, now() - interval '1 day', predicate => "
        "'$.data.total > 100', dry_run => true)",
        (hook,),
    ).fetchone()
    assert dry == (None, 1)
    assert conn.execute("SELECT count(*) FROM whk.replays").fetchone() == (0,)
    assert conn.execute(jobs).fetchone() == jobs_before
    row = conn.execute(
        "SELECT replay_id, total FROM whk.replay(webhook_id => %s, since => now() - interval '1 day')",
        (hook,),
    ).fetchone()
    assert row is not None and row[0] is not None and row[1] == 2
    assert progress(conn, row[0])[:3] == ("queued", 0, 2)
    created_by = conn.execute("SELECT created_by FROM whk.replays WHERE id = %s", (row[0],)).fetchone()
    assert created_by is not None and created_by[0].startswith("sql:")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as refused:
        conn.execute(
            "SELECT * FROM whk.replay(%s, now() - interval '400 days', dry_run => true)", (hook,)
        ).fetchone()
    assert refused.value.diag.message_hint is not None and "horizon" in refused.value.diag.message_hint
