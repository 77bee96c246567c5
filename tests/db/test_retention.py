"""Retention: settings with bounds; finished deliveries leave by whole expired days of whk.delivery_history
(never a dead letter or unfinished work, which live in whk.delivery_queue); the audit trail only through its
SECURITY DEFINER function; the dry-run plan; and a whole run as the worker's role."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.delivery import make_consumer, make_webhook
from whk import retention
from whk.sqlfiles import load_queries

pytestmark = pytest.mark.db

HISTORY = "whk.delivery_history"
FINISHED = ("delivered", "cancelled", "superseded")
UNFINISHED = ("pending", "in_flight", "awaiting_ack", "parked")


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


def outbox_day(conn: psycopg.Connection[Any], days_ago: int) -> str:
    """An outbox partition for the day `days_ago` days back (as one made back then)."""
    lo = conn.execute("SELECT date_trunc('day', now() - make_interval(days => %s))", (days_ago,)).fetchone()
    assert lo is not None
    conn.execute(
        f"CREATE TABLE whk.outbox_old{days_ago} PARTITION OF whk.outbox"
        f" FOR VALUES FROM ('{lo[0].isoformat()}')"
        f" TO ('{lo[0].isoformat()}'::timestamptz + interval '1 day')"
    )
    return f"whk.outbox_old{days_ago}"


def event(conn: psycopg.Connection[Any], days_ago: int, data: str = "{}") -> tuple[int, datetime]:
    """A routed outbox event created `days_ago` days ago: (outbox id, created_at)."""
    row = conn.execute(
        "INSERT INTO whk.outbox (event_type, data, operation, created_at, status) VALUES"
        " ('system.startup', %s::jsonb, 'EMIT', now() - make_interval(days => %s), 'routed')"
        " RETURNING id, created_at",
        (data, days_ago),
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def history_days(conn: psycopg.Connection[Any], days_ago: int) -> None:
    """One delivery-history partition per day from `days_ago` days back (as the housekeeping made them)."""
    conn.execute(
        "SELECT whk.create_partitions('whk.delivery_history', since => now() - make_interval(days => %s))",
        (days_ago,),
    )


def history_partition(conn: psycopg.Connection[Any], at: datetime) -> str:
    row = conn.execute(
        "SELECT partition_name FROM whk.partitions WHERE parent = 'whk.delivery_history'::regclass"
        " AND NOT is_default AND range_from <= %s AND range_to > %s",
        (at, at),
    ).fetchone()
    assert row is not None
    return str(row[0])


def ago(conn: psycopg.Connection[Any], days: int) -> datetime:
    row = conn.execute("SELECT now() - make_interval(days => %s)", (days,)).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def expired_history(conn: psycopg.Connection[Any], days: int) -> list[str]:
    """The history partitions whose whole day ended more than `days` days ago, oldest first."""
    rows = conn.execute(
        "SELECT partition_name FROM whk.partitions WHERE parent = 'whk.delivery_history'::regclass"
        " AND NOT is_default AND range_to <= now() - make_interval(days => %s) ORDER BY range_from",
        (days,),
    ).fetchall()
    return [r[0] for r in rows]


def delivery(
    conn: psycopg.Connection[Any],
    hook: tuple[int, int],
    status: str,
    days_ago: int,
    ev: tuple[int, datetime] | None = None,
    *,
    finished_at: datetime | None = None,
) -> int:
    """A delivery of event `ev` (default: an outbox id that does not exist) in `status`, last changed
    `days_ago` days ago, with one attempt started then. A finished one is in the history (finished then,
    or at `finished_at`); the others are live rows of the queue, a dead one made dead by an UPDATE as the
    hot path does (so the trigger whk.dead_letter_body gives it its copy of the body)."""
    outbox_id, created_at = ev if ev is not None else (-1, None)
    row = conn.execute(
        "INSERT INTO whk.delivery_queue (event_id, outbox_id, event_created_at, event_type, webhook_id,"
        " consumer_id, updated_at) VALUES (coalesce((SELECT event_id FROM whk.outbox WHERE id = %s),"
        " gen_random_uuid()), %s, coalesce(%s, now()), 'system.startup', %s, %s,"
        " now() - make_interval(days => %s)) RETURNING id",
        (outbox_id, outbox_id, created_at, hook[0], hook[1], days_ago),
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
    if status != "pending":
        conn.execute(
            "UPDATE whk.delivery_queue SET status = %s,"
            " dead_at = CASE WHEN %s = 'dead' THEN updated_at END,"
            " dead_reason = CASE WHEN %s = 'dead' THEN 'retries exhausted' END,"
            " lease_until = CASE WHEN %s = 'in_flight' THEN now() + interval '30 seconds' END"
            " WHERE id = %s",
            (status, status, status, status, row[0]),
        )
    if status in FINISHED:
        moved = conn.execute(
            "SELECT whk.archive_deliveries(ARRAY[%s]::bigint[],"
            " coalesce(%s, now() - make_interval(days => %s)))",
            (row[0], finished_at, days_ago),
        ).fetchone()
        assert moved == (1,)
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


def statuses(conn: psycopg.Connection[Any], table: str) -> dict[int, str]:
    return {r[0]: r[1] for r in conn.execute(f"SELECT id, status FROM whk.{table}").fetchall()}


def exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    assert row is not None
    return bool(row[0])


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


def test_history_retention_drops_whole_expired_days_one_per_call(conn: psycopg.Connection[Any]) -> None:
    conn.execute("UPDATE whk.whk_05_configuracoes SET value = '30' WHERE key = 'retention.delivered_days'")
    history_days(conn, 45)
    hook = webhook(conn)
    old = {delivery(conn, hook, s, 40) for s in ("delivered", "delivered", "cancelled")}
    old.add(delivery(conn, hook, "superseded", 44))
    # Live work and dead letters are in the queue, however old: the history's retention never sees them.
    live = {delivery(conn, hook, s, 40) for s in ("dead", *UNFINISHED)}
    recent = delivery(conn, hook, "delivered", 20)
    # The day that holds the horizon stays whole, even its rows finished before the horizon.
    edge_day = conn.execute(
        "SELECT range_from FROM whk.partitions WHERE parent = 'whk.delivery_history'::regclass"
        " AND range_from <= now() - interval '30 days' AND range_to > now() - interval '30 days'"
    ).fetchone()
    assert edge_day is not None
    edge = delivery(conn, hook, "delivered", 30, finished_at=edge_day[0])
    # Finished long before any partition existed: in the default partition, which is never dropped.
    stray = delivery(conn, hook, "delivered", 100)
    where = conn.execute("SELECT tableoid::regclass::text FROM whk.delivery_history WHERE id = %s", (stray,))
    assert where.fetchone() == ("whk.delivery_history_default",)
    expired = expired_history(conn, 30)
    assert len(expired) == 15  # the days 45 to 31 days ago
    assert history_partition(conn, edge_day[0]) not in expired
    attempts_before = conn.execute("SELECT count(*) FROM whk.whk_03_entregas_tentativas").fetchone()
    # The job's own statement, called until it drops nothing: one partition per call, the oldest first.
    drop = load_queries("whk", "retention.sql")["drop_history"]
    dropped: list[str] = []
    for _ in range(len(expired) + 1):
        rows = conn.execute(drop).fetchall()
        if not rows:
            break
        assert len(rows) == 1
        name, was_dropped, reason, size = rows[0]
        assert was_dropped, reason
        assert "finished deliveries from" in reason
        assert size > 0  # the partition's size on disk with its indexes, what dropping it freed
        dropped.append(name)
    assert dropped == expired
    assert not any(exists(conn, n) for n in expired)
    assert exists(conn, "whk.delivery_history_default")
    assert exists(conn, history_partition(conn, edge_day[0]))
    assert ids(conn, "whk_03_entregas") == live | {recent, edge, stray}
    assert not old & ids(conn, "whk_03_entregas")
    assert set(statuses(conn, "delivery_queue")) == live  # untouched, each in its state
    assert sorted(statuses(conn, "delivery_queue").values()) == sorted(("dead", *UNFINISHED))
    # The attempt log has its own retention (its own days): dropping history days leaves it alone.
    assert conn.execute("SELECT count(*) FROM whk.whk_03_entregas_tentativas").fetchone() == attempts_before
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="max_drops"):
        conn.execute("SELECT * FROM whk.drop_partitions('whk.delivery_history', '30 days', max_drops => 0)")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="not a time-partitioned") as err:
        conn.execute("SELECT * FROM whk.drop_partitions('whk.delivery_queue', '30 days')")
    assert err.value.diag.message_hint is not None
    assert "whk.delivery_history" in err.value.diag.message_hint


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
    outbox_day(conn, 40)
    conn.execute(
        "INSERT INTO whk.outbox (event_type, data, operation, created_at, status)"
        " SELECT 'system.startup', jsonb_build_object('n', g), 'EMIT', now() - interval '40 days', 'routed'"
        " FROM generate_series(1, 500) g"
    )
    history_days(conn, 40)
    hook = webhook(conn)
    done = {delivery(conn, hook, "delivered", 40) for _ in range(20)}
    day = history_partition(conn, ago(conn, 40))
    audit(conn, 400)
    conn.execute("ANALYZE whk.delivery_history, whk.whk_03_entregas_tentativas, whk.audit_log")
    rows = {(r.kind, r.item): r for r in retention.plan(conn)}
    for kind, name in (("outbox", "whk.outbox_old40"), ("delivered", day)):
        part = rows[(kind, name)]
        size = conn.execute("SELECT pg_total_relation_size(%s::regclass)", (name,)).fetchone()
        assert size is not None
        assert part.action == "drop partition"
        assert part.bytes == size[0]
        assert part.bytes > 0
        assert part.est_rows is None  # a partition goes whole: no rows are counted
    # Every expired history day is listed (empty ones too), the day holding the horizon is not.
    listed = sorted(item for kind, item in rows if kind == "delivered")
    assert listed == sorted(expired_history(conn, 30))
    batched = rows[("audit", "whk.audit_log")]
    assert batched.action == "batched delete"
    assert batched.est_rows is not None
    assert batched.est_rows >= 1
    assert batched.bytes is not None
    assert batched.bytes > 0
    # Nothing went.
    assert conn.execute("SELECT count(*) FROM whk.outbox_old40").fetchone() == (500,)
    assert conn.execute(f"SELECT count(*) FROM {day}").fetchone() == (20,)
    assert ids(conn, "whk_03_entregas") == done
    assert conn.execute("SELECT count(*) FROM whk.audit_log WHERE action = 'x.y'").fetchone() == (1,)


def test_a_run_as_the_worker_role_drops_expired_days_and_spares_live_work(
    conn: psycopg.Connection[Any],
) -> None:
    """Dead letters and unfinished work survive a whole run, even after their events' outbox day and the old
    history days are gone; a dead letter keeps its own copy of the body."""
    conn.execute("UPDATE whk.whk_05_configuracoes SET value = '30' WHERE key LIKE 'retention.%'")
    outbox_day(conn, 40)
    outbox_day(conn, 41)
    history_days(conn, 41)
    ev40 = event(conn, 40, '{"n": 40}')
    ev41 = event(conn, 41, '{"n": 41}')
    envelope = conn.execute(
        "SELECT whk.event_envelope(o) FROM whk.outbox o WHERE o.id = %s AND o.created_at = %s", ev40
    ).fetchone()
    assert envelope is not None
    dead = delivery(conn, webhook(conn), "dead", 40, ev40)
    old = {delivery(conn, webhook(conn), s, 40, ev40) for s in FINISHED}
    # Unfinished work keeps its event's outbox day (its body is built from it at the claim).
    unfinished = {delivery(conn, webhook(conn), s, 41, ev41) for s in UNFINISHED}
    expected_history = expired_history(conn, 30)
    assert len(expected_history) == 11  # the days 41 to 31 days ago
    audit(conn, 400)
    before = statuses(conn, "delivery_queue")
    conn.execute("SET ROLE whk_dispatcher")
    try:
        report = retention.run(conn, batch=1)
    finally:
        conn.execute("RESET ROLE")
    assert report.dropped == ["whk.outbox_old40", *expected_history]
    assert report.kept == {"whk.outbox_old41": "kept: unfinished deliveries"}
    assert report.freed_bytes > 0
    assert report.deleted == {"audit": 1}
    # The dead letter's event is gone with its day; the dead letter and the unfinished work are not.
    assert conn.execute("SELECT count(*) FROM whk.outbox WHERE id = %s", (ev40[0],)).fetchone() == (0,)
    assert statuses(conn, "delivery_queue") == before
    assert set(before) == {dead} | unfinished
    assert not old & ids(conn, "whk_03_entregas")
    payload = conn.execute("SELECT payload FROM whk.delivery_queue WHERE id = %s", (dead,)).fetchone()
    assert payload == envelope
    # Partitions ahead were created too (the worker's role may).
    ahead = conn.execute(
        "SELECT parent::text, count(*) FROM whk.partitions WHERE range_from > now() GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert [p for p, n in ahead if n >= 1] == [HISTORY, "whk.outbox", "whk.whk_03_entregas_tentativas"]


def test_a_dead_letter_whose_outbox_day_was_dropped_is_retried_with_the_same_body(
    conn: psycopg.Connection[Any],
) -> None:
    hook = make_webhook(conn, make_consumer(conn), "http://127.0.0.1:9/h")
    consumer = conn.execute("SELECT consumer_id FROM whk.whk_01_webhooks WHERE id = %s", (hook,)).fetchone()
    assert consumer is not None
    conn.execute("INSERT INTO whk.webhook_runtime (webhook_id) VALUES (%s) ON CONFLICT DO NOTHING", (hook,))
    outbox_day(conn, 40)
    ev = event(conn, 40, '{"pedido": 7, "cliente": "José", "total": 12.50, "itens": [1, 2]}')
    first_id = delivery(conn, (hook, consumer[0]), "pending", 40, ev)
    claim = "SELECT delivery_id, event_id, payload FROM whk.claim_deliveries('d1', 10, 30)"
    first = conn.execute(claim).fetchall()
    assert [r[0] for r in first] == [first_id]
    # Its retries ran out: the hot path marks it dead (the trigger copies the body).
    conn.execute(
        "UPDATE whk.delivery_queue SET status = 'dead', dead_at = now(), dead_reason = 'retries exhausted',"
        " lease_until = NULL WHERE id = %s",
        (first_id,),
    )
    conn.execute("UPDATE whk.whk_05_configuracoes SET value = '30' WHERE key = 'retention.outbox_days'")
    dropped = conn.execute(load_queries("whk", "retention.sql")["drop_outbox"]).fetchall()
    assert [(r[0], r[1]) for r in dropped] == [("whk.outbox_old40", True)]
    assert not exists(conn, "whk.outbox_old40")
    assert conn.execute("SELECT whk.retry_delivery(%s)", (first_id,)).fetchone() == (True,)
    again = conn.execute(claim).fetchall()
    assert again == first  # same delivery, same webhook-id, the same body bytes


def test_a_delivery_whose_outbox_partition_was_dropped_is_not_requeued(conn: psycopg.Connection[Any]) -> None:
    """Outbox retention drops partitions under delivered deliveries, which keep no copy of the body;
    retrying one afterwards would lease it forever without a body, so the retry leaves it alone."""
    hook = webhook(conn)
    outbox_day(conn, 40)
    done = delivery(conn, hook, "delivered", 40, event(conn, 40))
    conn.execute("UPDATE whk.whk_05_configuracoes SET value = '30' WHERE key = 'retention.outbox_days'")
    dropped = conn.execute(
        "SELECT partition_name FROM whk.outbox_drop_partitions('30 days') WHERE dropped"
    ).fetchall()
    assert dropped == [("whk.outbox_old40",)]
    assert conn.execute("SELECT whk.retry_delivery(%s)", (done,)).fetchone() == (False,)
    status = conn.execute("SELECT status FROM whk.whk_03_entregas WHERE id = %s", (done,)).fetchone()
    assert status == ("delivered",)
    assert ids(conn, "delivery_history") == {done}


def test_the_dba_loop_of_docs_dba_md_drops_day_by_day(conn: psycopg.Connection[Any]) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "dba.md").read_text("utf-8")
    section = text[text.index("## Retention") :]
    block = section[section.index("DO $$\n") :]
    block = block[: block.index("$$;") + 3]
    conn.execute("UPDATE whk.whk_05_configuracoes SET value = '30' WHERE key LIKE 'retention.%'")
    outbox_day(conn, 40)
    history_days(conn, 40)
    hook = webhook(conn)
    ev = event(conn, 40)
    old = {delivery(conn, hook, "delivered", 40, ev) for _ in range(3)}
    dead = delivery(conn, hook, "dead", 40, ev)
    for _ in range(3):
        audit(conn, 400)
    expired = expired_history(conn, 30)
    assert expired
    conn.execute(block.replace("10000", "2"))  # small batches: the loop commits between them
    assert not exists(conn, "whk.outbox_old40")
    assert not any(exists(conn, n) for n in expired)
    assert ids(conn, "whk_03_entregas") == {dead}
    assert not old & ids(conn, "whk_03_entregas")
    # Only rows past the horizon go (this test's own SQL-side setting changes are audited, and stay).
    old_audit = "SELECT count(*) FROM whk.audit_log WHERE occurred_at < now() - interval '30 days'"
    assert conn.execute(old_audit).fetchone() == (0,)
    # Nothing is left for a run to drop.
    left = conn.execute("SELECT item FROM whk.retention_plan() WHERE action = 'drop partition'").fetchall()
    assert left == []
