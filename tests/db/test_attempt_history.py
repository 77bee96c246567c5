"""The attempt log is partitioned by day (started_at): inserts always find a partition, retention drops
whole expired days (never a day a dead letter or unfinished work still needs), the dry run shows them with
sizes, and dropping a day does not wait for the delivery hot path."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.db.test_retention import delivery, webhook
from whk import retention

pytestmark = pytest.mark.db

ATTEMPTS = "whk.whk_03_entregas_tentativas"


def old_day(conn: psycopg.Connection[Any], days_ago: int) -> str:
    """A partition of the attempt log for the UTC day `days_ago` days back (as one made back then)."""
    row = conn.execute(
        "SELECT date_trunc('day', (now() - make_interval(days => %s)) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
        (days_ago,),
    ).fetchone()
    assert row is not None
    name = f"whk_03_entregas_tentativas_old{days_ago}"
    conn.execute(
        f"CREATE TABLE whk.{name} PARTITION OF {ATTEMPTS} FOR VALUES FROM ('{row[0].isoformat()}')"
        f" TO ('{row[0].isoformat()}'::timestamptz + interval '1 day')"
    )
    return f"whk.{name}"


def partition_of(conn: psycopg.Connection[Any], delivery_id: int) -> set[str]:
    rows = conn.execute(
        f"SELECT DISTINCT tableoid::regclass::text FROM {ATTEMPTS} WHERE delivery_id = %s", (delivery_id,)
    ).fetchall()
    return {r[0] for r in rows}


def test_attempts_land_in_their_day_and_never_fail_for_lack_of_a_partition(conn: psycopg.Connection[Any]):
    created = [r[0] for r in conn.execute(f"SELECT whk.create_partitions('{ATTEMPTS}', '2 days', 'day')")]
    assert len(created) == 3 and all(n.startswith("whk_03_entregas_tentativas_p") for n in created)
    again = conn.execute(f"SELECT * FROM whk.create_partitions('{ATTEMPTS}', '2 days', 'day')").fetchall()
    assert again == []
    hook = webhook(conn)
    today = delivery(conn, hook, "delivered", 0)
    assert partition_of(conn, today) == {f"whk.{created[0]}"}
    # No partition that far back: the default partition takes it, the insert does not fail.
    old = delivery(conn, hook, "delivered", 400)
    assert partition_of(conn, old) == {"whk.whk_03_entregas_tentativas_default"}
    # An attempt of a day not made yet (a clock ahead) waits in the default partition; the day's partition,
    # once made, takes it over with its id.
    ahead = conn.execute(
        "INSERT INTO whk.whk_03_entregas_tentativas (delivery_id, webhook_id, attempt_no, started_at,"
        " request_method, request_url, outcome)"
        " VALUES (%s, %s, 2, now() + interval '5 days', 'POST', 'x', 'x')"
        " RETURNING id, tableoid::regclass::text",
        (today, hook[0]),
    ).fetchone()
    assert ahead is not None and ahead[1] == "whk.whk_03_entregas_tentativas_default"
    made = [r[0] for r in conn.execute(f"SELECT whk.create_partitions('{ATTEMPTS}', '6 days', 'day')")]
    moved = conn.execute(
        f"SELECT tableoid::regclass::text FROM {ATTEMPTS} WHERE id = %s", (ahead[0],)
    ).fetchall()
    assert moved == [(f"whk.{made[2]}",)]  # days 3 to 6 ahead were made; the attempt is in day 5
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="not a time-partitioned"):
        conn.execute("SELECT whk.create_partitions('whk.whk_03_entregas')")


def test_retention_drops_whole_expired_days_but_not_those_dead_letters_or_open_work_need(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("UPDATE whk.whk_05_configuracoes SET value = '30' WHERE key = 'retention.attempts_days'")
    parts = {d: old_day(conn, d) for d in (40, 41, 42, 43, 20)}
    hook = webhook(conn)
    done = {delivery(conn, hook, "delivered", 40) for _ in range(3)}
    dead = delivery(conn, hook, "dead", 41)
    pending = delivery(conn, hook, "pending", 42)
    # A batch request of day 43, logged under its lowest member: a dead member (attempt_ids) keeps the day.
    batch_head = delivery(conn, hook, "delivered", 43)
    member = conn.execute(
        "INSERT INTO whk.delivery_queue (event_id, outbox_id, event_created_at, event_type, webhook_id,"
        " consumer_id, status, attempt_ids) SELECT gen_random_uuid(), 1, now(), 'system.startup', %s, %s,"
        " 'dead', ARRAY[t.id] FROM whk.whk_03_entregas_tentativas t WHERE t.delivery_id = %s RETURNING id",
        (*hook, batch_head),
    ).fetchone()
    assert member is not None
    recent = delivery(conn, hook, "delivered", 20)
    stray = delivery(conn, hook, "delivered", 400)  # in the default partition: never dropped

    plan = {r.item: r for r in retention.plan(conn) if r.kind == "attempts"}
    assert plan[parts[40]].action == "drop partition" and (plan[parts[40]].bytes or 0) > 0
    assert plan[parts[41]].action == "kept: attempts of dead-lettered deliveries"
    assert set(plan) == {parts[40], parts[41], parts[42], parts[43]}
    assert conn.execute(f"SELECT count(*) FROM {ATTEMPTS}").fetchone() == (8,)  # the dry run removed nothing

    result = {
        r[0]: (r[1], r[2])
        for r in conn.execute(
            f"SELECT partition_name, dropped, reason FROM whk.drop_partitions('{ATTEMPTS}', '30 days')"
        )
    }
    assert result[parts[40]][0] is True
    assert result[parts[41]] == (False, "kept: attempts of dead-lettered deliveries")
    assert result[parts[42]] == (False, "kept: attempts of unfinished deliveries")
    assert result[parts[43]] == (False, "kept: attempts of dead-lettered deliveries")
    assert parts[20] not in result and "whk.whk_03_entregas_tentativas_default" not in result
    left = {r[0] for r in conn.execute(f"SELECT delivery_id FROM {ATTEMPTS}").fetchall()}
    assert left == {dead, pending, batch_head, recent, stray}
    assert not done & left
    # Only the attempts went: the deliveries are the delivered-history retention's business.
    assert conn.execute(
        "SELECT count(*) FROM whk.whk_03_entregas WHERE id = ANY(%s)", (list(done),)
    ).fetchone() == (3,)


def test_dropping_a_day_does_not_wait_for_the_hot_path(conn: psycopg.Connection[Any], db_url: str) -> None:
    """A dispatcher's open transaction on the deliveries (a claim or an outcome being written) does not hold
    the drop of an old day up, and the drop's locks do not hold the deliveries' writers up either (a
    DETACH first would have given the partition a foreign key of its own: a lock on whk_03_entregas)."""
    conn.execute("UPDATE whk.whk_05_configuracoes SET value = '30' WHERE key = 'retention.attempts_days'")
    part = old_day(conn, 40)
    hook = webhook(conn)
    live = delivery(conn, hook, "in_flight", 0)
    other = delivery(conn, hook, "in_flight", 0)
    delivery(conn, hook, "delivered", 40)
    drop = f"SELECT partition_name, dropped FROM whk.drop_partitions('{ATTEMPTS}', '30 days', max_drops => 1)"
    with psycopg.connect(db_url) as hot, psycopg.connect(db_url) as dropper:
        hot.execute("UPDATE whk.delivery_queue SET updated_at = now() WHERE id = %s", (live,))
        assert dropper.execute(drop).fetchall() == [(part, True)]  # its locks are held until commit
        hot.execute("SET LOCAL lock_timeout = '2s'")
        hot.execute("UPDATE whk.delivery_queue SET updated_at = now() WHERE id = %s", (other,))
        hot.commit()
        dropper.commit()
    assert conn.execute("SELECT to_regclass(%s)", (part,)).fetchone() == (None,)
