"""Upgrading a database with data to 0004 (the partitioned attempt log) loses nothing: deliveries in every
state keep their state, their attempts (count and contents, single and batch requests) and their
webhook-id (the event_id). A dispatcher started while the upgrade runs is refused by the schema guard."""

from __future__ import annotations

import os
import subprocess
import threading
from typing import Any

import psycopg
import pytest

from tests.support.delivery import emit, make_consumer, make_webhook, route
from tests.support.dispatch import FAST_ENV, WHK
from tests.support.wait import wait_for
from whk import migrate

pytestmark = [pytest.mark.db, pytest.mark.slow]

# This migration's number (the lead may renumber it at merge): the database is built up to the one before.
UPGRADE = next(f.version for f in migrate.discover() if f.name == "attempt_history")
STATES = ("pending", "in_flight", "awaiting_ack", "delivered", "dead", "parked", "cancelled", "superseded")
ATTEMPT = (
    "INSERT INTO whk.whk_03_entregas_tentativas (delivery_id, delivery_ids, webhook_id, attempt_no, batch_id,"
    " dispatcher_id, started_at, duration_ms, request_method, request_url, request_headers, response_status,"
    " response_body, error_class, outcome)"
    " VALUES (%s, %s, %s, %s, %s, 'old-dispatcher', now() - make_interval(days => %s), 12.5, 'POST',"
    " 'https://example.com/h', '{\"webhook-id\": \"x\"}', %s, 'body', %s, %s) RETURNING id"
)


def seed(conn: psycopg.Connection[Any]) -> None:
    """Two deliveries per state, each with attempts spread over the last days; one batch request of three."""
    consumer = make_consumer(conn)
    hook = make_webhook(conn, consumer, "https://example.com/h", ["*"])
    emit(conn, "order.created", {"n": 1}, count=2 * len(STATES))
    assert route(conn) == 2 * len(STATES)
    ids = [r[0] for r in conn.execute("SELECT id FROM whk.whk_03_entregas ORDER BY id")]
    for i, (d, state) in enumerate(zip(ids, STATES * 2, strict=True)):
        attempts = []
        for no in range(1, 1 + i % 3):
            row = conn.execute(
                ATTEMPT, (d, None, hook, no, None, i + no, 500, "http_5xx", "retry")
            ).fetchone()
            assert row is not None
            attempts.append(row[0])
        conn.execute(
            "UPDATE whk.delivery_queue SET status = %s, attempts = %s, attempt_ids = %s,"
            " lease_until = CASE WHEN %s = 'in_flight' THEN now() + interval '1 hour' END,"
            " claimed_by = CASE WHEN %s = 'in_flight' THEN 'old-dispatcher' END WHERE id = %s",
            (state, len(attempts), attempts, state, state, d),
        )
    # One request that carried three deliveries: logged once under its lowest member.
    members = ids[:3]
    row = conn.execute(
        ATTEMPT,
        (members[0], members, hook, 3, "7d5f5c1e-0000-4000-8000-000000000001", 2, 200, None, "delivered"),
    ).fetchone()
    assert row is not None
    conn.execute(
        "UPDATE whk.delivery_queue SET attempt_ids = attempt_ids || %s::bigint WHERE id = ANY(%s)",
        (row[0], members),
    )


def snapshot(conn: psycopg.Connection[Any]) -> tuple[list[Any], list[Any]]:
    deliveries = conn.execute("SELECT id, to_jsonb(d) FROM whk.whk_03_entregas d ORDER BY id").fetchall()
    attempts = conn.execute(
        "SELECT id, to_jsonb(t) FROM whk.whk_03_entregas_tentativas t ORDER BY id"
    ).fetchall()
    return deliveries, attempts


def dispatcher_refused(db_url: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    env.update(FAST_ENV)
    env["WHK_DATABASE_URL"] = db_url
    out = subprocess.run([str(WHK), "dispatcher"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def test_upgrade_keeps_every_delivery_its_attempts_and_webhook_id(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrate.migrate(conn, target=UPGRADE - 1)
        seed(conn)
        before_deliveries, before_attempts = snapshot(conn)
        assert {d["status"] for _, d in before_deliveries} == set(STATES)
        assert any(a["delivery_ids"] for _, a in before_attempts)

        # An old dispatcher's attempt still being written holds the upgrade at its first lock, so the
        # upgrade is caught mid-way: its ledger row is written, not committed.
        with psycopg.connect(empty_db_url) as old:
            old.execute(
                ATTEMPT,
                (
                    before_deliveries[0][0],
                    None,
                    before_deliveries[0][1]["webhook_id"],
                    9,
                    None,
                    0,
                    200,
                    None,
                    "delivered",
                ),
            )
            errors: list[BaseException] = []

            def upgrade() -> None:
                try:
                    with psycopg.connect(empty_db_url, autocommit=True) as mconn:
                        migrate.migrate(mconn)
                except BaseException as exc:  # reported by the assertion after join()
                    errors.append(exc)

            runner = threading.Thread(target=upgrade)
            runner.start()
            wait_for(
                lambda: (
                    conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query LIKE %s",
                        (f"%{UPGRADE:04d} attempt_history%",),
                    ).fetchone()
                    == (1,)
                ),
                30,
                "the upgrade waiting on the attempt log's lock",
            )
            message = dispatcher_refused(empty_db_url)
            expected = f"schema is at version {UPGRADE - 1}, this code needs version {migrate.code_version()}"
            assert expected in message
            old.commit()
            runner.join(120)
        assert not runner.is_alive() and errors == []

        after_deliveries, after_attempts = snapshot(conn)
        assert after_deliveries == before_deliveries  # state, attempt_ids, event_id (webhook-id): all kept
        assert after_attempts[: len(before_attempts)] == before_attempts  # every attempt, ids and contents
        assert len(after_attempts) == len(before_attempts) + 1  # and the old dispatcher's last one
        # Each attempt sits in its day's partition; the identity continues after the old one.
        assert conn.execute("SELECT count(*) FROM whk.whk_03_entregas_tentativas_default").fetchone() == (0,)
        days = conn.execute(
            "SELECT count(*) FROM whk.partitions WHERE parent = 'whk.whk_03_entregas_tentativas'::regclass"
            " AND NOT is_default"
        ).fetchone()
        assert days is not None and days[0] >= 17  # the oldest attempt is 17 days old
        new = conn.execute(
            "INSERT INTO whk.whk_03_entregas_tentativas (delivery_id, webhook_id, attempt_no, request_method,"
            " request_url, outcome) SELECT id, webhook_id, 1, 'POST', 'x', 'x' FROM whk.whk_03_entregas"
            " ORDER BY id LIMIT 1 RETURNING id"
        ).fetchone()
        assert new is not None and new[0] > max(i for i, _ in after_attempts)
        # Now at the code's version, a dispatcher is no longer refused for the schema.
        migrate_status = migrate.status(conn)
        assert migrate_status.pending == [] and migrate_status.database_version == migrate.code_version()
