"""Partition sizes follow retention (whk.partition_period), so a table keeps about 35 partitions whatever
its retention, and a change of size fills only what is not covered yet (whk.create_partitions)."""

from __future__ import annotations

import itertools
from datetime import UTC, timedelta
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.db

TABLES = ("whk.outbox", "whk.delivery_history", "whk.whk_03_entregas_tentativas")


def ranges(conn: psycopg.Connection[Any], table: str) -> list[tuple[Any, Any]]:
    return [
        (r[0], r[1])
        for r in conn.execute(
            "SELECT range_from, range_to FROM whk.partitions WHERE parent = %s::regclass AND NOT is_default"
            " ORDER BY range_from",
            (table,),
        )
    ]


def set_retention(conn: psycopg.Connection[Any], key: str, days: int) -> None:
    conn.execute("UPDATE whk.whk_05_configuracoes SET value = to_jsonb(%s::int) WHERE key = %s", (days, key))


def test_the_partition_size_follows_each_tables_retention(conn: psycopg.Connection[Any]) -> None:
    period = "SELECT whk.partition_period(%s::regclass)"
    # The 365-day default of every retention setting: months.
    assert [conn.execute(period, (t,)).fetchone() for t in TABLES] == [("month",)] * 3
    set_retention(conn, "retention.outbox_days", 35)
    set_retention(conn, "retention.delivered_days", 36)
    set_retention(conn, "retention.attempts_days", 245)
    assert [conn.execute(period, (t,)).fetchone() for t in TABLES] == [("day",), ("week",), ("week",)]
    set_retention(conn, "retention.attempts_days", 246)
    assert conn.execute(period, (TABLES[2],)).fetchone() == ("month",)


@pytest.mark.parametrize("days", [7, 35, 90, 245, 365, 3650])
def test_housekeeping_over_a_whole_retention_keeps_the_partition_count_small(
    conn: psycopg.Connection[Any], days: int
) -> None:
    set_retention(conn, "retention.outbox_days", days)
    # What the hourly housekeeping leaves after running since the retention's horizon (its own period).
    conn.execute(
        "SELECT whk.create_partitions('whk.outbox', since => now() - make_interval(days => %s))", (days,)
    )
    made = ranges(conn, "whk.outbox")
    # About 35 of the period plus the week made ahead; ten years of months are 121.
    assert len(made) <= (days // 30 + 3 if days > 245 else 44)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(made))  # contiguous: nothing falls in a gap
    now = conn.execute("SELECT now()").fetchone()
    assert now is not None
    assert made[0][0] <= now[0] - timedelta(days=days) and made[-1][1] >= now[0] + timedelta(days=7)


def test_a_new_partition_size_fills_only_what_the_old_partitions_leave(conn: psycopg.Connection[Any]) -> None:
    # Day partitions for today and three days ahead (a short retention, say), then the retention grows to
    # a year: month partitions take over from where the days end, without overlapping them.
    days = [r[0] for r in conn.execute("SELECT whk.create_partitions('whk.outbox', '3 days', 'day')")]
    assert len(days) == 4
    # A row whose day has no partition yet waits in the default partition.
    stray = conn.execute(
        "INSERT INTO whk.outbox (event_type, data, operation, created_at)"
        " VALUES ('system.startup', '{}', 'EMIT', now() + interval '6 days') RETURNING id"
    ).fetchone()
    assert stray is not None
    made = [r[0] for r in conn.execute("SELECT whk.create_partitions('whk.outbox', '40 days')")]
    spans = ranges(conn, "whk.outbox")
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))  # contiguous, no overlap
    assert len(spans) == len(days) + len(made)  # the day partitions stay as they were
    first_day = next(k for k, (lo, hi) in enumerate(spans) if (hi - lo).days == 1)
    assert all((hi - lo).days == 1 for lo, hi in spans[first_day : first_day + 4])
    # Before the days: from the month's start; after them: up to the next month, then whole months.
    assert all(lo.astimezone(UTC).day == 1 for lo, _ in spans[:first_day])
    assert all(hi.astimezone(UTC).day == 1 for _, hi in spans[first_day + 4 :])
    assert all(lo.astimezone(UTC).day == 1 for lo, _ in spans[first_day + 5 :])
    where = conn.execute(
        "SELECT tableoid::regclass::text FROM whk.outbox WHERE id = %s", (stray[0],)
    ).fetchone()
    assert where is not None and where[0].removeprefix("whk.") in made  # out of the default, same id
    assert conn.execute("SELECT * FROM whk.create_partitions('whk.outbox', '40 days')").fetchall() == []
