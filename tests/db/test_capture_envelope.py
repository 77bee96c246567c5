"""The delivered body is rebuilt from the outbox's data by whk.event_envelope (migration 0013).

Capture stores only what varies per row (the row images, the changed columns); every reader gets the
Standard Webhooks envelope from one function. These tests pin its exact output per operation, that the
same stored row always gives byte-identical text (retries and replays sign the same body), and that
the function is inlined into the readers' queries.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.db.test_delivery_sql import URL, claim, record
from tests.support.delivery import make_consumer, make_webhook

pytestmark = pytest.mark.db

TS_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'


def _items(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE public.items (sku text PRIMARY KEY, qty int, price numeric)")
    conn.execute("SELECT whk.enable_capture('public.items', 'inv.item', 'sku')")


def _rows(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    cur = conn.execute(
        "SELECT o.operation, o.data, o.old_data, o.changed, o.occurred_at, e.payload::text AS body,"
        f" to_char(o.created_at AT TIME ZONE 'UTC', '{TS_FORMAT}') AS created"
        " FROM whk.outbox o JOIN whk.outbox_events e ON e.id = o.id AND e.created_at = o.created_at"
        " ORDER BY o.id"
    )
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def test_each_operation_stores_its_data_and_gets_the_envelope(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    _items(conn)
    # One transaction, several statements: every event carries the transaction's time (created_at).
    with psycopg.connect(db_url) as tx:
        tx.execute("INSERT INTO public.items VALUES ('A-1', 5, 9.90)")
        tx.execute("UPDATE public.items SET qty = 4 WHERE sku = 'A-1'")
        tx.execute("UPDATE public.items SET qty = 4 WHERE sku = 'A-1'")  # no-op: nothing
        tx.execute("DELETE FROM public.items WHERE sku = 'A-1'")
        tx.execute("SELECT whk.emit('system.health_check', '{\"status\": \"ok\"}')")
    new = {"sku": "A-1", "qty": 5, "price": 9.90}
    newer = {**new, "qty": 4}
    ins, upd, dele, emit = _rows(conn)

    # Stored: only the row image(s) and the changed columns; no envelope, no timestamp.
    assert (ins["operation"], ins["old_data"], ins["changed"], ins["occurred_at"]) == (
        "INSERT",
        None,
        None,
        None,
    )
    assert ins["data"] == new
    assert (upd["data"], upd["old_data"], upd["changed"]) == (newer, new, ["qty"])
    assert (dele["data"], dele["old_data"], dele["changed"]) == (None, newer, None)
    assert (emit["operation"], emit["data"], emit["old_data"]) == ("EMIT", {"status": "ok"}, None)

    ts = ins["created"]
    assert {r["created"] for r in (upd, dele, emit)} == {ts}
    row = {"op": None, "table": "public.items", "new": None, "old": None, "changed": None}
    expected = [
        {"type": "inv.item.created", "timestamp": ts, "data": {**row, "op": "INSERT", "new": new}},
        {
            "type": "inv.item.updated",
            "timestamp": ts,
            "data": {**row, "op": "UPDATE", "new": newer, "old": new, "changed": ["qty"]},
        },
        {"type": "inv.item.deleted", "timestamp": ts, "data": {**row, "op": "DELETE", "old": newer}},
        {"type": "system.health_check", "timestamp": ts, "data": {"status": "ok"}},
    ]
    bodies = [json.loads(r["body"]) for r in (ins, upd, dele, emit)]
    assert bodies == expected
    # Bindings that emit their own types from row changes (whk.row_change) produce the same data object.
    for op, body in zip(("INSERT", "UPDATE", "DELETE"), bodies, strict=False):
        d = body["data"]
        (same,) = conn.execute(
            "SELECT whk.row_change(%s, %s, %s::jsonb, %s::jsonb)",
            [op, d["table"], json.dumps(d["new"]), json.dumps(d["old"])],
        ).fetchone() or (None,)
        assert same == d
    # jsonb's canonical text: what the webhook receives, byte for byte.
    assert ins["body"] == (
        '{"data": {"op": "INSERT", "new": {"qty": 5, "sku": "A-1", "price": 9.90}, "old": null,'
        f' "table": "public.items", "changed": null}}, "type": "inv.item.created", "timestamp": "{ts}"}}'
    )


def test_the_body_is_byte_identical_when_taken_retried_and_claimed_again(
    conn: psycopg.Connection[Any],
) -> None:
    _items(conn)
    hook = make_webhook(conn, make_consumer(conn), URL, ["inv.*"])
    conn.execute("INSERT INTO whk.webhook_runtime (webhook_id) VALUES (%s)", [hook])
    conn.execute("INSERT INTO public.items VALUES ('B-2', 1, 'NaN')")
    taken = conn.execute(
        "SELECT delivery_id, payload FROM whk.route_and_take(100, 'd1', 10, 30) WHERE delivery_id IS NOT NULL"
    ).fetchall()
    assert len(taken) == 1
    delivery_id, first = taken[0]
    # A failed attempt: pending again (a retry, due now), claimed again later.
    due = datetime.now(UTC) - timedelta(seconds=1)
    record(
        conn,
        [
            {
                "id": delivery_id,
                "webhook_id": hook,
                "state": "pending",
                "next_attempt_at": due,
                "response_status": 500,
            }
        ],
    )
    [(again_id, *_rest, second)] = claim(conn)
    assert again_id == delivery_id
    (view,) = conn.execute("SELECT payload::text FROM whk.outbox_events").fetchone() or (None,)
    assert first == second == view
    assert json.loads(first)["data"]["new"]["price"] == "NaN"


def test_a_missing_outbox_row_gives_null(conn: psycopg.Connection[Any]) -> None:
    # The delivery detail LEFT JOINs the outbox: an event whose partition was dropped has no body.
    assert conn.execute(
        "SELECT whk.event_envelope(o) FROM (VALUES (1)) v(x) LEFT JOIN whk.outbox o ON false"
    ).fetchone() == (None,)


def test_event_envelope_is_inlined_into_its_readers(conn: psycopg.Connection[Any]) -> None:
    # No SET clause and a single SELECT: the planner substitutes the body (no function call per row).
    plan = "\n".join(
        r[0]
        for r in conn.execute("EXPLAIN (VERBOSE) SELECT whk.event_envelope(o) FROM whk.outbox o").fetchall()
    )
    assert "jsonb_build_object" in plan and "event_envelope" not in plan
