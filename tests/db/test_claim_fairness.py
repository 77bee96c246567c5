"""Fairness at scale: 1,000,000 pending deliveries for one endpoint must not delay another endpoint's
fresh event, and the claim must walk the per-webhook due index (checked with auto_explain on the real
function, so a planner change that picks a global scan fails here)."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from tests.support.delivery import emit, make_consumer, make_webhook
from tests.support.dispatch import fast_settings, running
from tests.support.receiver import Reply, receiver, wait_until

pytestmark = [pytest.mark.db, pytest.mark.slow]
__all__ = ["receiver"]


def seed_backlog(conn: psycopg.Connection[Any], webhook_id: int, consumer_id: int, rows: int) -> None:
    """``rows`` pending deliveries for one webhook, all pointing at one outbox event (cheap to seed)."""
    (outbox_id, created_at) = conn.execute(
        "INSERT INTO whk.outbox (event_type, data, operation, status, routed_at, commit_seq) "
        "VALUES ('bulk.e', '{}', 'EMIT', 'routed', now(), "
        "nextval('whk.outbox_commit_seq')) RETURNING id, created_at"
    ).fetchone()
    conn.execute(
        """
        INSERT INTO whk.delivery_queue (event_id, outbox_id, event_created_at, event_type, webhook_id,
                                         consumer_id, commit_seq, next_attempt_at)
        SELECT gen_random_uuid(), %s, %s, 'bulk.e', %s, %s, g, now() - interval '1 hour'
        FROM generate_series(1, %s) g
        """,
        [outbox_id, created_at, webhook_id, consumer_id, rows],
    )
    conn.execute(
        "INSERT INTO whk.webhook_runtime (webhook_id) VALUES (%s) ON CONFLICT DO NOTHING", [webhook_id]
    )
    conn.execute("ANALYZE whk.whk_03_entregas")


def claim_plans(conn: psycopg.Connection[Any]) -> str:
    """The plans of every statement inside one whk.claim_deliveries call (auto_explain as notices)."""
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    conn.execute("LOAD 'auto_explain'")
    conn.execute("SET auto_explain.log_min_duration = 0")
    conn.execute("SET auto_explain.log_nested_statements = on")
    conn.execute("SET auto_explain.log_level = 'notice'")
    conn.execute("SET client_min_messages = 'notice'")
    with conn.transaction(force_rollback=True):
        conn.execute("SELECT * FROM whk.claim_deliveries('explain', 10, 30)").fetchall()
    conn.execute("SET auto_explain.log_min_duration = -1")
    return "\n".join(notices)


async def test_million_backlog_does_not_delay_another_endpoint(db_url, conn, receiver):
    c = make_consumer(conn)
    busy = make_webhook(conn, c, receiver.url("/busy"), ["bulk.*"], max_in_flight=10)
    quiet = make_webhook(conn, c, receiver.url("/quiet"), ["quiet.*"])
    receiver.on("/busy", default=Reply(delay_s=0.05))
    seed_backlog(conn, busy, c, 1_000_000)

    plans = claim_plans(conn)
    pick = [p for p in plans.split("Query Text:") if "FOR UPDATE SKIP LOCKED" in p and "next_attempt_at" in p]
    assert pick, plans[:2000]
    assert all("delivery_queue_due_idx" in p for p in pick), pick[0][:2000]
    assert not any("Seq Scan on whk_03_entregas" in p for p in plans.split("Query Text:"))

    async with running(fast_settings(db_url)):
        assert await wait_until(lambda: len(receiver.to("/busy")) >= 10, 30)  # the backlog is draining
        emit(conn, "quiet.event")
        started = time.monotonic()
        assert await wait_until(lambda: len(receiver.to("/quiet")) == 1, 5, 0.01)
        assert time.monotonic() - started < 2.0
    row = conn.execute("SELECT status FROM whk.whk_03_entregas WHERE webhook_id = %s", [quiet]).fetchone()
    assert row == ("delivered",)
