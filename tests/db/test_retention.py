"""Retention: settings with bounds, batched deletes that spare dead letters and unfinished work, the audit
trail only through its SECURITY DEFINER function, the dry-run plan, and a whole run as the worker's role."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from whk import retention

pytestmark = pytest.mark.db


def webhook(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    consumer = conn.execute(
        "INSERT INTO whk.whk_04_assinantes (name) VALUES ('c-' || gen_random_uuid()) RETURNING id"
    ).fetchone()
    assert consumer is not None
    hook = conn.execute(
        "INSERT INTO whk.whk_01_webhooks (consumer_id, name, url, event_types)"
        " VALUES (%s, 'h', 'https://example.com/h', '{*}') RETURNING id",
        (consumer[0],),
    ).fetchone()
    assert hook is not None
    return hook[0], consumer[0]


def delivery(conn: psycopg.Connection[Any], hook: tuple[int, int], status: str, days_ago: int) -> int:
    """A delivery in `status` last changed `days_ago` days ago, with one attempt started then."""
    row = conn.execute(
        "INSERT INTO whk.delivery_queue (event_id, outbox_id, event_created_at, event_type, webhook_id,"
        " consumer_id, status, updated_at) VALUES (gen_random_uuid(), 1, now(), 'system.startup', %s, %s, %s,"
        " now() - make_interval(days => %s)) RETURNING id",
        (hook[0], hook[1], status, days_ago),
    ).fetchone()
    assert row is not None
    # Listed in the delivery's attempt_ids, as whk.record_outcomes does.
    conn.execute(
        "WITH a AS (INSERT INTO whk.whk_03_entregas_tentativas (delivery_id, webhook_id, attempt_no,"
        " started_at, request_method, request_url, outcome)"
        " VALUES (%s, %s, 1, now() - make_interval(days => %s), 'POST', 'https://example.com/h', 'x')"
        " RETURNING id, delivery_id)"
        " UPDATE whk.delivery_queue d SET attempt_ids = d.attempt_ids || a.id, attempts = 1"
        " FROM a WHERE d.id = a.delivery_id",
        (row[0], hook[0], days_ago),
    )
    return int(row[0])


def audit(conn: psycopg.Connection[Any], days_ago: int) -> int:
    row = conn.execute(
        "INSERT INTO whk.audit_log (occurred_at, actor, action, target_type)"
        " VALUES (now() - make_interval(days => %s), 't', 'x.y', 'thing') RETURNING id",
        (days_ago,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def ids(conn: psycopg.Connection[Any], table: str) -> set[int]:
    return {r[0] for r in conn.execute(f"SELECT id FROM whk.{table}").fetchall()}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("retention.outbox_days", "0"),
        ("retention.delivered_days", "3651"),
        ("retention.attempts_days", "1.5"),
        ("retention.audit_days", "29"),
    ],
)
def test_retention_settings_are_bounded(conn: psycopg.Connection[Any], key: str, value: str) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match=key):
        conn.execute("UPDATE whk.whk_05_configuracoes SET value = %s::jsonb WHERE key = %s", (value, key))


def test_retention_settings_are_seeded_at_365_days(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "SELECT key, value FROM whk.whk_05_configuracoes WHERE category = 'retention' ORDER BY key"
    ).fetchall()
    assert rows == [
        ("retention.attempts_days", 365),
        ("retention.audit_days", 365),
        ("retention.delivered_days", 365),
        ("retention.outbox_days", 365),
    ]
    gap = conn.execute("SELECT now() - whk.retention_horizon('outbox')").fetchone()
    assert gap is not None
    assert gap[0].days == 365


def test_delivery_retention_deletes_old_finished_deliveries_in_batches_only(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("UPDATE whk.whk_05_configuracoes SET value = '30' WHERE key = 'retention.delivered_days'")
    hook = webhook(conn)
    old_done = {delivery(conn, hook, s, 40) for s in ("delivered", "delivered", "cancelled")}
    kept = {delivery(conn, hook, s, 40) for s in ("dead", "pending", "parked", "awaiting_ack", "in_flight")}
    kept.add(delivery(conn, hook, "delivered", 20))
    assert conn.execute("SELECT whk.retention_delete_deliveries(2)").fetchone() == (2,)
    assert conn.execute("SELECT whk.retention_delete_deliveries(2)").fetchone() == (1,)
    assert conn.execute("SELECT whk.retention_delete_deliveries(2)").fetchone() == (0,)
    assert ids(conn, "whk_03_entregas") == kept
    # Their attempts went with them (ON DELETE CASCADE); the others' stay.
    left = {r[0] for r in conn.execute("SELECT delivery_id FROM whk.whk_03_entregas_tentativas").fetchall()}
    assert left == kept
    assert not old_done & ids(conn, "whk_03_entregas")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="batch size"):
        conn.execute("SELECT whk.retention_delete_deliveries(0)")


@pytest.mark.parametrize("role", ["whk_app", "whk_dispatcher", "whk_readonly"])
def test_audit_retention_runs_only_through_its_function(conn: psycopg.Connection[Any], role: str) -> None:
    old = audit(conn, 400)
    recent = {audit(conn, 300), audit(conn, 0)}
    conn.execute(f"SET ROLE {role}")
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM whk.audit_log")
        if role == "whk_dispatcher":  # the worker's role runs retention
            assert conn.execute("SELECT whk.retention_delete_audit()").fetchone() == (1,)
        else:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT whk.retention_delete_audit()")
    finally:
        conn.execute("RESET ROLE")
    expected = recent if role == "whk_dispatcher" else recent | {old}
    assert ids(conn, "audit_log") == expected


def test_audit_retention_keeps_thirty_days_whatever_the_setting(conn: psycopg.Connection[Any]) -> None:
    # The CHECK refuses less than 30 days; even with the row gone (365 by default) or the CHECK bypassed by
    # an owner, the function keeps 30 days.
    conn.execute("ALTER TABLE whk.whk_05_configuracoes DISABLE TRIGGER USER")
    conn.execute("ALTER TABLE whk.whk_05_configuracoes DROP CONSTRAINT whk_05_configuracoes_value_bounds")
    conn.execute("UPDATE whk.whk_05_configuracoes SET value = '1' WHERE key = 'retention.audit_days'")
    young = audit(conn, 10)
    old = audit(conn, 31)
    assert conn.execute("SELECT whk.retention_delete_audit()").fetchone() == (1,)
    assert ids(conn, "audit_log") == {young}
    assert old not in ids(conn, "audit_log")


def test_plan_shows_sizes_and_removes_nothing(conn: psycopg.Connection[Any]) -> None:
    conn.execute("UPDATE whk.whk_05_configuracoes SET value = '30' WHERE key LIKE 'retention.%'")
    lo = conn.execute("SELECT date_trunc('day', now() - interval '40 days')").fetchone()
    assert lo is not None
    conn.execute(
        f"CREATE TABLE whk.outbox_old40 PARTITION OF whk.outbox FOR VALUES FROM ('{lo[0].isoformat()}')"
        f" TO ('{lo[0].isoformat()}'::timestamptz + interval '1 day')"
    )
    conn.execute(
        "INSERT INTO whk.outbox (event_type, data, operation, created_at, status)"
        " SELECT 'system.startup', jsonb_build_object('n', g), 'EMIT', now() - interval '40 days', 'routed'"
        " FROM generate_series(1, 500) g"
    )
    hook = webhook(conn)
    for _ in range(20):
        delivery(conn, hook, "delivered", 40)
    audit(conn, 400)
    conn.execute("ANALYZE whk.whk_03_entregas, whk.whk_03_entregas_tentativas, whk.audit_log")
    rows = {(r.kind, r.item): r for r in retention.plan(conn)}
    part = rows[("outbox", "whk.outbox_old40")]
    size = conn.execute("SELECT pg_total_relation_size('whk.outbox_old40')").fetchone()
    assert size is not None
    assert part.action == "drop partition"
    assert part.bytes == size[0]
    assert part.bytes > 0
    batched = rows[("delivered", "whk.whk_03_entregas")]
    assert batched.action == "batched delete"
    assert batched.est_rows is not None
    assert batched.est_rows >= 1
    assert batched.bytes is not None
    assert batched.bytes > 0
    assert ("audit", "whk.audit_log") in rows
    # Nothing went.
    assert conn.execute("SELECT count(*) FROM whk.outbox_old40").fetchone() == (500,)
    assert conn.execute("SELECT count(*) FROM whk.whk_03_entregas").fetchone() == (20,)


def test_a_run_as_the_worker_role_drops_expired_partitions_and_history(conn: psycopg.Connection[Any]) -> None:
    conn.execute("UPDATE whk.whk_05_configuracoes SET value = '30' WHERE key LIKE 'retention.%'")
    for d in (40, 41):
        lo = conn.execute("SELECT date_trunc('day', now() - make_interval(days => %s))", (d,)).fetchone()
        assert lo is not None
        conn.execute(
            f"CREATE TABLE whk.outbox_old{d} PARTITION OF whk.outbox FOR VALUES FROM ('{lo[0].isoformat()}')"
            f" TO ('{lo[0].isoformat()}'::timestamptz + interval '1 day')"
        )
    hook = webhook(conn)
    ev = conn.execute(
        "INSERT INTO whk.outbox (event_type, data, operation, created_at, status) VALUES"
        " ('system.startup', '{}', 'EMIT', now() - interval '41 days', 'routed') RETURNING id, created_at"
    ).fetchone()
    assert ev is not None
    dead = delivery(conn, hook, "dead", 40)
    conn.execute(
        "UPDATE whk.delivery_queue SET outbox_id = %s, event_created_at = %s WHERE id = %s", (*ev, dead)
    )
    old = delivery(conn, hook, "delivered", 40)
    audit(conn, 400)
    conn.execute("SET ROLE whk_dispatcher")
    try:
        report = retention.run(conn, batch=1)
    finally:
        conn.execute("RESET ROLE")
    assert report.dropped == ["whk.outbox_old40"]
    assert report.kept == {"whk.outbox_old41": "kept: dead-lettered deliveries"}
    assert report.deleted == {"deliveries": 1, "audit": 1}
    assert old not in ids(conn, "whk_03_entregas")
    assert dead in ids(conn, "whk_03_entregas")
    # Partitions ahead were created too (the worker's role may).
    ahead = conn.execute(
        "SELECT parent::text, count(*) FROM whk.partitions WHERE range_from > now() GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert [p for p, n in ahead if n >= 1] == ["whk.outbox", "whk.whk_03_entregas_tentativas"]


def test_the_dba_loop_of_docs_dba_md_commits_batch_by_batch(conn: psycopg.Connection[Any]) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "dba.md").read_text("utf-8")
    block = text[text.index("DO $$\nBEGIN\n    WHILE whk.retention_delete_deliveries") :]
    block = block[: block.index("$$;") + 3]
    conn.execute("UPDATE whk.whk_05_configuracoes SET value = '30' WHERE key LIKE 'retention.%'")
    hook = webhook(conn)
    old = {delivery(conn, hook, "delivered", 40) for _ in range(3)}
    dead = delivery(conn, hook, "dead", 40)
    audit(conn, 400)
    conn.execute(block.replace("10000", "2"))  # small batches: the loop commits between them
    assert ids(conn, "whk_03_entregas") == {dead}
    assert not old & ids(conn, "whk_03_entregas")
    # Only rows past the horizon go (this test's own SQL-side setting changes are audited, and stay).
    old_audit = "SELECT count(*) FROM whk.audit_log WHERE occurred_at < now() - interval '30 days'"
    assert conn.execute(old_audit).fetchone() == (0,)
    dry = conn.execute("SELECT * FROM whk.outbox_drop_partitions('90 days', dry_run => true)").fetchall()
    assert dry == []  # no old partition in a fresh database


def test_a_delivery_whose_outbox_partition_was_dropped_is_not_requeued(conn: psycopg.Connection[Any]) -> None:
    """Outbox retention drops partitions under delivered deliveries; retrying one afterwards would lease it
    forever without a body (the claim joins the outbox), so the retry leaves it alone."""
    hook = webhook(conn)
    lo = conn.execute("SELECT date_trunc('day', now() - interval '40 days')").fetchone()
    assert lo is not None
    conn.execute(
        f"CREATE TABLE whk.outbox_old40 PARTITION OF whk.outbox FOR VALUES FROM ('{lo[0].isoformat()}')"
        f" TO ('{lo[0].isoformat()}'::timestamptz + interval '1 day')"
    )
    ev = conn.execute(
        "INSERT INTO whk.outbox (event_type, data, operation, created_at, status) VALUES"
        " ('system.startup', '{}', 'EMIT', now() - interval '40 days', 'routed') RETURNING id, created_at"
    ).fetchone()
    assert ev is not None
    done = delivery(conn, hook, "delivered", 40)
    conn.execute(
        "UPDATE whk.delivery_queue SET outbox_id = %s, event_created_at = %s WHERE id = %s", (*ev, done)
    )
    conn.execute("UPDATE whk.whk_05_configuracoes SET value = '30' WHERE key = 'retention.outbox_days'")
    dropped = conn.execute(
        "SELECT partition_name FROM whk.outbox_drop_partitions('30 days') WHERE dropped"
    ).fetchall()
    assert dropped == [("whk.outbox_old40",)]
    assert conn.execute("SELECT whk.retry_delivery(%s)", (done,)).fetchone() == (False,)
    status = conn.execute("SELECT status FROM whk.whk_03_entregas WHERE id = %s", (done,)).fetchone()
    assert status == ("delivered",)
