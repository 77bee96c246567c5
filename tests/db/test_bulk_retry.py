"""Bulk retry in SQL: the filters and the tenant are honoured, batches by keyset with requeued/skipped
progress, deliveries whose event left the outbox are skipped (not lost from the count), and bad input is
refused with a hint."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.support.resources import make_delivery, make_webhook

pytestmark = pytest.mark.db


def consumer(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "INSERT INTO whk.whk_04_assinantes (name) VALUES ('c-' || gen_random_uuid()) RETURNING id"
    ).fetchone()
    assert row is not None
    return int(row[0])


def start(
    conn: psycopg.Connection[Any],
    tenant: int | None,
    *,
    webhook_id: int | None = None,
    event_type: str | None = None,
    statuses: list[str] | None = None,
) -> int:
    row = conn.execute(
        "SELECT whk.bulk_retry_start(%s, %s, %s, %s, NULL, NULL, 'test')",
        (tenant, webhook_id, event_type, statuses or ["dead"]),
    ).fetchone()
    assert row is not None
    return int(row[0])


def progress(conn: psycopg.Connection[Any], bulk_id: int) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT state, total, done, requeued, skipped FROM whk.bulk_retries WHERE id = %s", (bulk_id,)
    ).fetchone()
    assert row is not None
    return tuple(row)


def status(conn: psycopg.Connection[Any], delivery_id: int) -> str:
    row = conn.execute("SELECT status FROM whk.whk_03_entregas WHERE id = %s", (delivery_id,)).fetchone()
    assert row is not None
    return str(row[0])


def test_batches_honour_filters_and_tenant_and_count_skipped(conn: psycopg.Connection[Any]) -> None:
    a, b = consumer(conn), consumer(conn)
    hook = make_webhook(conn, a)
    other = make_webhook(conn, b)
    dead = [make_delivery(conn, hook, status="dead") for _ in range(5)]
    shipped = make_delivery(conn, hook, status="dead", event_type="order.shipped")
    delivered = make_delivery(conn, hook, status="delivered", attempts=1)
    foreign = make_delivery(conn, other, status="dead")
    # The event of one dead letter left the outbox (retention): it can no longer be sent.
    conn.execute(
        "DELETE FROM whk.outbox o USING whk.whk_03_entregas d WHERE d.id = %s AND o.id = d.outbox_id",
        (dead[4],),
    )
    bulk = start(conn, a, event_type="order.created")
    assert progress(conn, bulk) == ("queued", 5, 0, 0, 0)
    assert conn.execute("SELECT whk.bulk_retry_step(%s, 2)", (bulk,)).fetchone() == (True,)
    assert progress(conn, bulk) == ("running", 5, 2, 2, 0)
    assert conn.execute("SELECT whk.bulk_retry_step(%s, 2)", (bulk,)).fetchone() == (True,)
    assert conn.execute("SELECT whk.bulk_retry_step(%s, 2)", (bulk,)).fetchone() == (False,)
    assert progress(conn, bulk) == ("done", 5, 5, 4, 1)
    assert [status(conn, d) for d in dead] == ["pending"] * 4 + ["dead"]
    assert (status(conn, shipped), status(conn, delivered), status(conn, foreign)) == (
        "dead",
        "delivered",
        "dead",
    )
    # A finished bulk retry does nothing more, and cannot be cancelled.
    assert conn.execute("SELECT whk.bulk_retry_step(%s, 2)", (bulk,)).fetchone() == (False,)
    assert conn.execute("SELECT whk.bulk_retry_cancel(%s)", (bulk,)).fetchone() == (False,)
    # An admin's (no tenant) reaches every consumer's dead letters.
    everyone = start(conn, None)
    assert progress(conn, everyone)[1] == 3  # shipped, the one without its event, foreign


def test_cancel_stops_between_batches(conn: psycopg.Connection[Any]) -> None:
    hook = make_webhook(conn, consumer(conn))
    dead = [make_delivery(conn, hook, status="dead") for _ in range(4)]
    bulk = start(conn, None, webhook_id=hook)
    conn.execute("SELECT whk.bulk_retry_step(%s, 2)", (bulk,))
    assert conn.execute("SELECT whk.bulk_retry_cancel(%s)", (bulk,)).fetchone() == (True,)
    assert conn.execute("SELECT whk.bulk_retry_step(%s, 2)", (bulk,)).fetchone() == (False,)
    assert progress(conn, bulk) == ("cancelled", 4, 2, 2, 0)
    assert [status(conn, d) for d in dead] == ["pending", "pending", "dead", "dead"]


def test_bad_input_is_refused_with_a_hint(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        conn.execute("SELECT whk.bulk_retry_start(NULL, NULL, NULL, '{in_flight}', NULL, NULL, 'test')")
    assert err.value.diag.message_hint is not None
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        conn.execute(
            "SELECT whk.bulk_retry_start(NULL, NULL, NULL, '{dead}', now(), now() - interval '1 h', 't')"
        )
    assert err.value.diag.message_hint is not None
    bulk = start(conn, None)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        conn.execute("SELECT whk.bulk_retry_step(%s, 100001)", (bulk,))
    assert err.value.diag.message_hint is not None
    # The table's own checks hold for a DBA writing to it directly.
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE whk.bulk_retries SET done = 1 WHERE id = %s", (bulk,))


def test_the_api_and_worker_roles_can_run_a_bulk_retry(conn: psycopg.Connection[Any]) -> None:
    hook = make_webhook(conn, consumer(conn))
    dead = make_delivery(conn, hook, status="dead")
    conn.execute("SET ROLE whk_app")  # the API starts and cancels
    try:
        bulk = start(conn, None, webhook_id=hook)
        queued = conn.execute(
            "SELECT count(*) FROM whk.pgqueuer"
            " WHERE entrypoint = 'bulk_retry' AND payload = convert_to(%s, 'UTF8')",
            (str(bulk),),
        ).fetchone()
        assert queued == (1,)
        other = start(conn, None, webhook_id=hook)
        assert conn.execute("SELECT whk.bulk_retry_cancel(%s)", (other,)).fetchone() == (True,)
    finally:
        conn.execute("RESET ROLE")
    conn.execute("SET ROLE whk_dispatcher")  # the job worker steps
    try:
        assert conn.execute("SELECT whk.bulk_retry_step(%s)", (bulk,)).fetchone() == (False,)
    finally:
        conn.execute("RESET ROLE")
    assert progress(conn, bulk) == ("done", 1, 1, 1, 0)
    assert status(conn, dead) == "pending"
