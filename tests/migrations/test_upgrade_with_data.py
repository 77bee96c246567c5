"""Upgrading a database with data to 0005 (the delivery lifecycle: live queue + day-partitioned history)
loses nothing: deliveries in every state are each still there exactly once (whk.whk_03_entregas, now a view)
with their state, attempts, attempt_ids and webhook-id (the event_id); live ones sit in whk.delivery_queue,
finished ones in whk.delivery_history's day partitions, never both; every attempt survives (the attempt log's
old foreign key cascaded deletes); dead letters get their own body, a pinned major's body is kept; the ids
continue; and the normal path (claim, outcome, retry) works on the old rows afterwards. A dispatcher started
while the upgrade runs is refused by the schema guard, and an old one's write waiting on the upgrade's lock
fails on the view instead of writing into the moved data."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from typing import Any

import psycopg
import pytest

from tests.db.test_delivery_sql import claim, record
from tests.support.delivery import emit, make_consumer, make_webhook, route
from tests.support.dispatch import FAST_ENV, WHK
from tests.support.pg import start_server
from tests.support.wait import wait_for
from whk import migrate

pytestmark = [pytest.mark.db, pytest.mark.slow]

# This migration's number (the lead may renumber it at merge): the database is built up to the one before.
UPGRADE = next(f.version for f in migrate.discover() if f.name == "delivery_lifecycle")
STATES = ("pending", "in_flight", "awaiting_ack", "delivered", "dead", "parked", "cancelled", "superseded")
LIVE = {"pending", "in_flight", "awaiting_ack", "dead", "parked"}
FINISHED = {"delivered", "cancelled", "superseded"}
# The deliveries of the webhook pinned to major 1 (their payload is the body rendered at routing).
PINNED_STATES = ("dead", "delivered", "pending", "superseded")
PINNED_TYPE = "shop.order_paid"
V1 = {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "integer"}}}
ATTEMPT = (
    "INSERT INTO whk.whk_03_entregas_tentativas (delivery_id, delivery_ids, webhook_id, attempt_no, batch_id,"
    " dispatcher_id, started_at, duration_ms, request_method, request_url, request_headers, response_status,"
    " response_body, error_class, outcome)"
    " VALUES (%s, %s, %s, %s, %s, 'old-dispatcher', now() - make_interval(days => %s), 12.5, 'POST',"
    " 'https://example.com/h', '{\"webhook-id\": \"x\"}', %s, 'body', %s, %s) RETURNING id"
)
# The old table's columns of a delivery's state, set as the old dispatcher and functions left them.
SET_STATE = """
UPDATE whk.whk_03_entregas SET
    status = %(state)s, attempts = %(attempts)s, attempt_ids = %(attempt_ids)s,
    next_attempt_at = CASE WHEN %(state)s = 'pending' THEN now() - interval '1 minute'
                           ELSE now() - make_interval(days => %(age)s) END,
    lease_until = CASE WHEN %(state)s = 'in_flight' THEN now() + interval '1 hour' END,
    claimed_by = CASE WHEN %(state)s = 'in_flight' THEN 'old-dispatcher' END,
    last_status_code = CASE WHEN %(attempts)s > 0 THEN 500 END,
    last_attempt_at = CASE WHEN %(attempts)s > 0 THEN now() - make_interval(days => %(age)s) END,
    delivered_at = CASE WHEN %(state)s IN ('delivered', 'awaiting_ack')
                        THEN now() - make_interval(days => %(age)s) END,
    ack_deadline = CASE WHEN %(state)s = 'awaiting_ack' THEN now() + interval '1 day' END,
    dead_at = CASE WHEN %(state)s = 'dead' THEN now() - make_interval(days => %(age)s) END,
    dead_reason = CASE WHEN %(state)s = 'dead' THEN 'retries exhausted' END,
    superseded_by = CASE WHEN %(state)s = 'superseded' THEN id + 1000 END,
    updated_at = now() - make_interval(days => %(age)s, hours => 3)
WHERE id = %(id)s
"""


def seed(conn: psycopg.Connection[Any]) -> None:
    """Two deliveries per state, last changed on different days, each with attempts spread over the last
    days; one batch request of three; four of them for a webhook pinned to major 1."""
    consumer = make_consumer(conn)
    hook = make_webhook(conn, consumer, "https://example.com/h", ["order.*"])
    conn.execute("SELECT whk.register_event_type(%s, %s::jsonb)", (PINNED_TYPE, json.dumps(V1)))
    pinned = make_webhook(conn, consumer, "https://example.com/v1", ["shop.*"], payload_version=1)
    emit(conn, "order.created", {"n": 1}, count=2 * len(STATES) - len(PINNED_STATES))
    emit(conn, PINNED_TYPE, {"amount": 7}, count=len(PINNED_STATES))
    assert route(conn) == 2 * len(STATES)
    rows = conn.execute("SELECT id, webhook_id FROM whk.whk_03_entregas ORDER BY id").fetchall()
    others = list(STATES * 2)
    for s in PINNED_STATES:
        others.remove(s)
    pinned_states, other_states = iter(PINNED_STATES), iter(others)
    for i, (d, webhook) in enumerate(rows):
        state = next(pinned_states) if webhook == pinned else next(other_states)
        attempts = []
        for no in range(1, 1 + i % 3):
            row = conn.execute(
                ATTEMPT, (d, None, webhook, no, None, i + no, 500, "http_5xx", "retry")
            ).fetchone()
            assert row is not None
            attempts.append(row[0])
        conn.execute(
            SET_STATE, {"state": state, "attempts": len(attempts), "attempt_ids": attempts, "age": i, "id": d}
        )
    # One request that carried three deliveries: logged once under its lowest member.
    members = [d for d, webhook in rows if webhook == hook][:3]
    row = conn.execute(
        ATTEMPT,
        (members[0], members, hook, 3, "7d5f5c1e-0000-4000-8000-000000000001", 2, 200, None, "delivered"),
    ).fetchone()
    assert row is not None
    conn.execute(
        "UPDATE whk.whk_03_entregas SET attempt_ids = attempt_ids || %s::bigint WHERE id = ANY(%s)",
        (row[0], members),
    )


def snapshot(conn: psycopg.Connection[Any]) -> tuple[list[Any], list[Any]]:
    """Every delivery (without the view's finished_at) and every attempt, in id order."""
    deliveries = conn.execute(
        "SELECT id, to_jsonb(d) - 'finished_at' FROM whk.whk_03_entregas d ORDER BY id"
    ).fetchall()
    attempts = conn.execute(
        "SELECT id, to_jsonb(t) FROM whk.whk_03_entregas_tentativas t ORDER BY id"
    ).fetchall()
    return deliveries, attempts


def ids(conn: psycopg.Connection[Any], query: str, *args: Any) -> list[int]:
    return [r[0] for r in conn.execute(query, args or None)]


# The columns a delivery keeps for life, whatever happens to it.
KEPT = (
    "id",
    "event_id",
    "outbox_id",
    "event_created_at",
    "event_type",
    "webhook_id",
    "consumer_id",
    "ordering_key",
    "commit_seq",
    "schedule_offset",
    "superseded_by",
    "payload",
    "render_problem",
    "created_at",
)


def unchanged(delivery: dict[str, Any]) -> dict[str, Any]:
    return {k: delivery[k] for k in KEPT}


def finished_row(conn: psycopg.Connection[Any], delivery: int) -> dict[str, Any]:
    """The delivery's one row in the history (and none in the queue)."""
    assert ids(conn, "SELECT id FROM whk.delivery_queue WHERE id = %s", delivery) == []
    rows = conn.execute(
        "SELECT to_jsonb(h) FROM whk.delivery_history h WHERE id = %s", (delivery,)
    ).fetchall()
    assert len(rows) == 1
    return dict(rows[0][0])


def dispatcher_refused(db_url: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    env.update(FAST_ENV)
    env["WHK_DATABASE_URL"] = db_url
    out = subprocess.run([str(WHK), "dispatcher"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def waiting_on_lock(conn: psycopg.Connection[Any], pattern: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s", (pattern,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def in_background(target: Any, errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            target()
        except BaseException as exc:  # reported by the assertions after join()
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_upgrade_keeps_every_delivery_once_its_attempts_and_webhook_id(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrate.migrate(conn, target=UPGRADE - 1)
        seed(conn)
        before_deliveries, before_attempts = snapshot(conn)
        state_of = {i: d["status"] for i, d in before_deliveries}
        assert sorted(state_of.values()) == sorted(STATES * 2)
        assert any(a["delivery_ids"] for _, a in before_attempts)
        pinned_body = {i: d["payload"] for i, d in before_deliveries if d["payload"] is not None}
        assert len(pinned_body) == len(PINNED_STATES)
        assert all(p["version"] == 1 for p in pinned_body.values())
        envelopes: dict[int, Any] = dict(
            conn.execute(
                "SELECT d.id, whk.event_envelope(o) FROM whk.whk_03_entregas d JOIN whk.outbox o"
                " ON o.id = d.outbox_id AND o.created_at = d.event_created_at WHERE d.status = 'dead'"
            ).fetchall()
        )
        assert len(envelopes) == 2

        # An old dispatcher's attempt still being written (its foreign key check holds a lock on the old
        # table) holds the upgrade at its first lock, so the upgrade is caught mid-way: its ledger row is
        # written, not committed.
        with psycopg.connect(empty_db_url) as old, psycopg.connect(empty_db_url) as old_late:
            first, first_row = before_deliveries[0]
            old.execute(ATTEMPT, (first, None, first_row["webhook_id"], 9, None, 0, 200, None, "delivered"))
            errors: list[BaseException] = []
            late_errors: list[BaseException] = []

            def upgrade() -> None:
                with psycopg.connect(empty_db_url, autocommit=True) as mconn:
                    migrate.migrate(mconn)

            runner = in_background(upgrade, errors)
            wait_for(
                lambda: waiting_on_lock(conn, f"%{UPGRADE:04d} delivery_lifecycle%") == 1,
                30,
                "the upgrade waiting on the deliveries' lock",
            )
            message = dispatcher_refused(empty_db_url)
            expected = f"schema is at version {UPGRADE - 1}, this code needs version {migrate.code_version()}"
            assert expected in message
            # Another old dispatcher's outcome queues behind the upgrade: once the upgrade commits, it finds
            # the read-only view, not a table it could write a delivery into.
            late = in_background(
                lambda: old_late.execute(
                    "UPDATE whk.whk_03_entregas SET status = 'pending' WHERE id = %s /* old-late */", (first,)
                ),
                late_errors,
            )
            wait_for(lambda: waiting_on_lock(conn, "%/* old-late */%") == 1, 30, "the old write waiting")
            old.commit()
            runner.join(120)
            late.join(60)
        assert not runner.is_alive() and errors == []
        assert not late.is_alive() and len(late_errors) == 1
        assert "cannot update view" in str(late_errors[0])

        after_deliveries, after_attempts = snapshot(conn)
        # Every delivery exactly once, every column kept (state, attempts, attempt_ids, event_id =
        # webhook-id, next_attempt_at, ...) but a dead letter's body, now its own copy of its envelope.
        expected_deliveries = [
            (i, d | {"payload": envelopes[i]}) if i in envelopes and d["payload"] is None else (i, d)
            for i, d in before_deliveries
        ]
        assert after_deliveries == expected_deliveries
        for i, body in pinned_body.items():  # the pinned bodies are not overwritten, dead or not
            assert dict(after_deliveries)[i]["payload"] == body
        assert sum(state_of[i] == "dead" for i in pinned_body) == 1  # a pinned dead letter kept its body
        assert len(set(envelopes) - set(pinned_body)) == 1  # and the other one got the copy

        # Live work in the queue, finished ones in the history, never both.
        queue = ids(conn, "SELECT id FROM whk.delivery_queue ORDER BY id")
        history = ids(conn, "SELECT id FROM whk.delivery_history ORDER BY id")
        assert queue == sorted(i for i, s in state_of.items() if s in LIVE)
        assert history == sorted(i for i, s in state_of.items() if s in FINISHED)
        assert not set(queue) & set(history)
        # The history in day partitions made from the oldest finished one's day, none in the default one;
        # finished_at is each one's last change.
        assert conn.execute("SELECT count(*) FROM whk.delivery_history_default").fetchone() == (0,)
        days = conn.execute("SELECT count(DISTINCT tableoid) FROM whk.delivery_history").fetchone()
        assert days == (len(history),)  # each one finished on another day
        assert conn.execute(
            "SELECT count(*) FROM whk.delivery_history WHERE finished_at <> updated_at"
        ).fetchone() == (0,)

        # Every attempt, ids and contents (the old foreign key cascaded: moving a delivery deleted them),
        # and the old dispatcher's last one.
        assert after_attempts[: len(before_attempts)] == before_attempts
        assert len(after_attempts) == len(before_attempts) + 1
        migrate_status = migrate.status(conn)
        assert migrate_status.pending == [] and migrate_status.database_version == migrate.code_version()

        # The identity continues: a delivery routed now gets an id above every old one.
        emit(conn, "order.created", {"n": 2})
        assert route(conn) == 1
        newest = ids(
            conn,
            "SELECT id FROM whk.delivery_queue WHERE created_at > now() - interval '1 hour'"
            " AND id NOT IN (SELECT unnest(%s::bigint[]))",
            list(state_of),
        )
        assert len(newest) == 1 and newest[0] > max(state_of)

        # The normal path on the old rows: an old pending delivery is claimed, and delivered it moves to the
        # history with its old attempts and the new one.
        old_pending = sorted(i for i, s in state_of.items() if s == "pending" and i not in pinned_body)[0]
        claimed = {r[0] for r in claim(conn, who="new-dispatcher")}
        assert old_pending in claimed
        assert (
            record(
                conn,
                [
                    {
                        "id": old_pending,
                        "webhook_id": dict(before_deliveries)[old_pending]["webhook_id"],
                        "state": "delivered",
                        "attempt_no": 7,
                    }
                ],
                who="new-dispatcher",
            )
            == 1
        )
        moved = finished_row(conn, old_pending)
        assert unchanged(moved) == unchanged(dict(before_deliveries)[old_pending])
        assert (moved["status"], moved["attempts"]) == ("delivered", 7)
        old_ids = dict(before_deliveries)[old_pending]["attempt_ids"]
        assert moved["attempt_ids"][:-1] == old_ids and moved["attempt_ids"][-1] > max(
            i for i, _ in after_attempts
        )
        # An old one awaiting its ack, acked, moves through whk.archive_deliveries (which copies the queue's
        # columns, the old table's, by position into the history's).
        awaiting = sorted(i for i, s in state_of.items() if s == "awaiting_ack")[0]
        assert conn.execute("SELECT whk.ack_delivery(%s)", (awaiting,)).fetchone() == (True,)
        acked = finished_row(conn, awaiting)
        assert unchanged(acked) == unchanged(dict(before_deliveries)[awaiting])
        assert (
            acked["status"] == "delivered"
            and acked["attempt_ids"] == dict(before_deliveries)[awaiting]["attempt_ids"]
        )
        # Dead letters and an old delivered one retried come back pending in the queue, same ids, bodies kept.
        dead = sorted(i for i, s in state_of.items() if s == "dead")
        delivered = sorted(i for i, s in state_of.items() if s == "delivered")
        assert conn.execute("SELECT whk.retry_deliveries(%s::bigint[])", (dead + delivered,)).fetchone() == (
            4,
        )
        back = conn.execute(
            "SELECT id, status, payload FROM whk.delivery_queue WHERE id = ANY(%s) ORDER BY id",
            (dead + delivered,),
        ).fetchall()
        assert [(i, s) for i, s, _ in back] == [(i, "pending") for i in sorted(dead + delivered)]
        for i, _, payload in back:
            assert payload == (pinned_body.get(i) or envelopes.get(i))
        assert ids(conn, "SELECT id FROM whk.delivery_history WHERE id = ANY(%s)", dead + delivered) == []


def test_an_upgrade_cut_off_midway_changes_nothing_and_runs_again(empty_db_url: str) -> None:
    """The upgrade's connection is killed after it renamed the deliveries and built the history (held on
    the outbox, which it reads next): the database is left exactly as it was, at the old version, and
    the upgrade then runs again."""
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrate.migrate(conn, target=UPGRADE - 1)
        seed(conn)
        before = snapshot(conn)
        with psycopg.connect(empty_db_url) as holder:
            holder.execute("LOCK TABLE whk.outbox IN ACCESS EXCLUSIVE MODE")
            errors: list[BaseException] = []

            def upgrade() -> None:
                with psycopg.connect(empty_db_url, autocommit=True) as mconn:
                    migrate.migrate(mconn)

            runner = in_background(upgrade, errors)
            wait_for(
                lambda: (
                    conn.execute(
                        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                        " WHERE NOT l.granted AND l.relation = 'whk.outbox'::regclass AND a.query LIKE %s",
                        (f"%{UPGRADE:04d} delivery_lifecycle%",),
                    ).fetchone()
                    == (1,)
                ),
                30,
                "the upgrade past its first steps, waiting for the outbox",
            )
            # Mid-way: the history exists in the upgrade's transaction only.
            assert conn.execute(
                "SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a WHERE a.query LIKE %s"
                " AND a.pid <> pg_backend_pid()",
                (f"%{UPGRADE:04d} delivery_lifecycle%",),
            ).fetchall() == [(True,)]
            runner.join(60)
            holder.rollback()
        assert not runner.is_alive() and len(errors) == 1
        assert migrate.status(conn).database_version == UPGRADE - 1
        assert conn.execute(
            "SELECT relkind, to_regclass('whk.delivery_history') FROM pg_class"
            " WHERE oid = 'whk.whk_03_entregas'::regclass"
        ).fetchone() == ("r", None)
        assert snapshot(conn) == before

        migrate.migrate(conn)
        assert migrate.status(conn).database_version == migrate.code_version()
        after_deliveries, after_attempts = snapshot(conn)
        assert [i for i, _ in after_deliveries] == [i for i, _ in before[0]]
        assert after_attempts == before[1]


def test_upgrade_with_years_of_finished_deliveries_fits_a_default_server() -> None:
    """Finished deliveries are kept as long as retention.delivered_days says (up to 3650 days; two years
    here): the upgrade moves them all into the history in its one transaction on a server with
    PostgreSQL's default lock table (max_connections 100, max_locks_per_transaction 64) without running
    out of shared memory (a partition a day back to the oldest one took ~16 locks a day), and none lands
    in the default partition."""
    server = start_server("-c max_connections=100 -c max_locks_per_transaction=64")
    try:
        with psycopg.connect(server.dsn(server.create_database()), autocommit=True) as conn:
            migrate.migrate(conn, target=UPGRADE - 1)
            consumer = make_consumer(conn)
            make_webhook(conn, consumer, "https://example.com/h", ["order.*"])
            emit(conn, "order.created", {"n": 1}, count=3)
            assert route(conn) == 3
            conn.execute(
                "UPDATE whk.whk_05_configuracoes SET value = '730' WHERE key = 'retention.delivered_days'"
            )
            # Two years of history (the retention job keeps them), and live work.
            for d, state, age in [(1, "delivered", 729), (2, "cancelled", 300), (3, "pending", 0)]:
                conn.execute(
                    "UPDATE whk.whk_03_entregas SET status = %s,"
                    " updated_at = now() - make_interval(days => %s) WHERE id = %s",
                    (state, age, d),
                )
            migrate.migrate(conn)
            assert migrate.status(conn).pending == []
            assert ids(conn, "SELECT id FROM whk.whk_03_entregas ORDER BY id") == [1, 2, 3]
            assert ids(conn, "SELECT id FROM whk.delivery_history ORDER BY id") == [1, 2]
            assert conn.execute("SELECT count(*) FROM whk.delivery_history_default").fetchone() == (0,)
    finally:
        server.stop()
