"""The dispatcher's SQL keeps plans that stay linear in their input (migration 0014 steady_plans).

The hot-path functions always use their generic plan (plan_cache_mode = force_generic_plan): PostgreSQL's
own choice depended on the first calls' sizes. A generic plan estimates every CTE and unnest at a handful
of rows, so it must not contain a join that rescans an input-sized CTE per row: these tests read the
executed plans (auto_explain, nested statements) of a routing round and an outcome flush of 200
deliveries, with statistics that no longer match the table (taken while it was empty, or while nothing was
in flight).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from tests.support.delivery import emit, make_consumer, make_webhook, statuses
from tests.support.plans import explained, plan_of

pytestmark = pytest.mark.db

URL = "http://127.0.0.1:9/hook"
N = 200
HOT_FUNCTIONS = ("route_and_take", "claim_deliveries", "dispatch_round", "record_outcomes")
# CTEs whose size is the round's input: none may be scanned more than once.
SIZED_CTES = ("numbered", "routed", "matched", "chosen", "fanned", "items", "attempts", "changes")


def _rescanned_ctes(plan: str) -> list[str]:
    return [
        f"{name} x{loops}"
        for name, loops in re.findall(r"CTE Scan on (\w+)[^\n]*loops=(\d+)", plan)
        if name in SIZED_CTES and int(loops) > 1
    ]


def test_hot_functions_always_use_their_generic_plan(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "SELECT p.proname, p.proconfig FROM pg_proc p WHERE p.pronamespace = 'whk'::regnamespace "
        "AND p.proname = ANY(%s)",
        [list(HOT_FUNCTIONS)],
    ).fetchall()
    assert sorted(r[0] for r in rows) == sorted(HOT_FUNCTIONS)
    for name, config in rows:
        assert "plan_cache_mode=force_generic_plan" in config, name
        assert "enable_seqscan=off" in config, name


def _hook(conn: psycopg.Connection[Any]) -> int:
    hook = make_webhook(conn, make_consumer(conn), URL, ["t.*"], max_in_flight=1000)
    conn.execute("INSERT INTO whk.webhook_runtime (webhook_id) VALUES (%s)", [hook])
    return hook


def _take(conn: psycopg.Connection[Any]) -> tuple[list[Any], str]:
    return explained(
        conn,
        "SELECT delivery_id, payload FROM whk.route_and_take(1000, 'd1', 1000, 30) "
        "WHERE delivery_id IS NOT NULL",
        [],
    )


def test_routing_round_stays_linear_with_empty_table_statistics(conn: psycopg.Connection[Any]) -> None:
    hook = _hook(conn)
    conn.execute("ANALYZE whk.whk_03_entregas")  # statistics of an empty table, as after a truncate
    emit(conn, "t.e", count=N)
    taken, plans = _take(conn)
    assert len(taken) == N
    assert sorted(json.loads(p)["data"]["seq"] for _, p in taken) == list(range(N))
    routing = plan_of(plans, "WITH numbered")
    assert _rescanned_ctes(routing) == []
    # The taken payloads come from the outbox by an index probe, not from a CTE joined per row.
    final = routing.split("CTE fanned")[-1]
    assert re.search(r"Index Scan using outbox\w+ on outbox\w+ o ", final)
    assert "id = f.outbox_id" in final
    assert statuses(conn, hook) == {"in_flight": N}


def _record(conn: psycopg.Connection[Any], hook: int, ids: list[int]) -> tuple[int, str]:
    n = len(ids)
    attempts = [
        {
            "ix": i,
            "webhook_id": hook,
            "success": True,
            "failure": False,
            "gone": False,
            "outcome": "delivered",
            "request_method": "POST",
            "request_url": URL,
            "started_at": datetime.now(UTC).isoformat(),
        }
        for i in range(n)
    ]
    [(applied,)], plans = explained(
        conn,
        "SELECT applied FROM whk.record_outcomes('d1', %s::jsonb, %s::bigint[], %s::integer[], "
        "%s::integer[], %s::text[], %s::timestamptz[], %s::timestamptz[], %s::text[])",
        [
            json.dumps(attempts),
            ids,
            list(range(n)),
            [1] * n,
            ["delivered"] * n,
            [None] * n,
            [None] * n,
            [None] * n,
        ],
    )
    return int(applied), plans


@pytest.mark.parametrize("analyzed", ["empty", "nothing_in_flight"])
def test_outcome_flush_stays_linear_with_stale_statistics(
    conn: psycopg.Connection[Any], analyzed: str
) -> None:
    hook = _hook(conn)
    if analyzed == "empty":
        conn.execute("ANALYZE whk.whk_03_entregas")
    else:  # N delivered rows, nothing in flight, then N deliveries go in flight
        emit(conn, "t.e", count=N)
        first, _ = _take(conn)
        assert _record(conn, hook, [d for d, _ in first])[0] == N
        conn.execute("ANALYZE whk.whk_03_entregas")
    emit(conn, "t.e", count=N)
    taken, _ = _take(conn)
    # One delivery's lease was reclaimed by another dispatcher meanwhile: its outcome must not be applied.
    lost = taken[0][0]
    conn.execute("UPDATE whk.delivery_queue SET claimed_by = 'd2' WHERE id = %s", [lost])
    applied, plans = _record(conn, hook, [d for d, _ in taken])
    assert applied == N - 1
    done = N - 1 + (N if analyzed != "empty" else 0)
    assert statuses(conn, hook) == {"delivered": done, "in_flight": 1}
    recording = plan_of(plans, "WITH items")
    assert _rescanned_ctes(recording) == []
    # Each delivery's row is found by one primary-key probe...
    changes = recording.split("CTE changes")[1].split("\n  CTE ")[0]
    assert "Index Scan using delivery_queue_pkey" in changes
    # ...and updated through its TID: no index, whatever the statistics say, drives the UPDATE.
    update = plan_of(plans, "UPDATE whk.delivery_queue d")
    assert "Tid Scan on delivery_queue d" in update
    assert "Index" not in update.split("Update on delivery_queue d")[1]


def test_due_work_is_probed_per_webhook_not_read_in_full(conn: psycopg.Connection[Any]) -> None:
    hook = _hook(conn)
    conn.execute("ANALYZE whk.whk_03_entregas")  # statistics of an empty table
    emit(conn, "t.e", count=N)
    conn.execute("SELECT count(*) FROM whk.route_and_take(1000, 'd1', 0, 30)")  # all N pending and due
    assert statuses(conn, hook) == {"pending": N}

    claimed, plans = explained(conn, "SELECT delivery_id FROM whk.claim_deliveries('d1', 10, 30)", [])
    assert len(claimed) == 10
    # Which webhooks have due work: one probe of each webhook's due index, not every due delivery read and
    # grouped by webhook.
    pick = plan_of(plans, "FOR UPDATE OF r SKIP LOCKED")
    assert "webhook_id = wh.id" in pick and "Group Key: d.webhook_id" not in pick

    emit(conn, "t.e", count=5)
    _, plans = _take(conn)
    # route_and_take's "no due backlog" test is the same probe (here it finds the backlog: nothing is taken).
    takers = plan_of(plans, "WITH numbered").split("CTE takers")[1].split("\n  CTE ")[0]
    assert re.search(r"due_idx on delivery_queue d\w*[^\n]*\n\s+Index Cond: \(\(webhook_id = w", takers)
    assert statuses(conn, hook) == {"pending": N - 10 + 5, "in_flight": 10}
