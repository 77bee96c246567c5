"""The delivery SQL API (migration 0005) on a real database: routing, the fair claim, outcomes."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.support.delivery import emit, make_consumer, make_webhook, route, statuses
from tests.support.plans import explained

pytestmark = pytest.mark.db

URL = "http://127.0.0.1:9/hook"


def claim(
    conn: psycopg.Connection[Any],
    limit: int = 100,
    who: str = "d1",
    finished: list[int] | None = None,
    now: datetime | None = None,
) -> list[tuple[Any, ...]]:
    """``now``: the moment the claim judges by (p_now; None = the clock)."""
    return conn.execute(
        "SELECT delivery_id, webhook_id, batch_id, commit_seq, ordering_key, payload "
        "FROM whk.claim_deliveries(%s, %s, 30, %s::bigint[], NULL, %s::timestamptz)",
        [who, limit, finished or [], now],
    ).fetchall()


_DELIVERY_KEYS = ("id", "attempt_no", "state", "next_attempt_at", "ack_deadline", "dead_reason")


def record(
    conn: psycopg.Connection[Any], items: list[dict[str, Any]], who: str = "d1", now: datetime | None = None
) -> int:
    """One request per item, each carrying one delivery (whk.record_outcomes' attempts + delivery arrays);
    ``now``: the moment they are written at (p_now; None = the clock)."""
    return record_full(conn, items, who, now)[0]


def record_full(
    conn: psycopg.Connection[Any], items: list[dict[str, Any]], who: str = "d1", now: datetime | None = None
) -> tuple[int, list[dict[str, Any]] | None]:
    """``record`` with both outputs of whk.record_outcomes: (applied, breaker_transitions)."""
    attempts = []
    for ix, it in enumerate(items):
        it.setdefault("request_method", "POST")
        it.setdefault("request_url", URL)
        it.setdefault("outcome", it["state"])
        it.setdefault("attempt_no", 1)
        it.setdefault("success", it["state"] in ("delivered", "awaiting_ack"))
        it.setdefault("failure", not it["success"])
        attempts.append({"ix": ix, **{k: v for k, v in it.items() if k not in _DELIVERY_KEYS}})
    row = conn.execute(
        "SELECT applied, breaker_transitions FROM whk.record_outcomes(%s, %s::jsonb, %s::bigint[], "
        "%s::integer[], %s::integer[], %s::text[], %s::timestamptz[], %s::timestamptz[], %s::text[], "
        "%s::timestamptz)",
        [
            who,
            json.dumps(attempts, default=str),
            [it["id"] for it in items],
            list(range(len(items))),
            [it["attempt_no"] for it in items],
            [it["state"] for it in items],
            [it.get("next_attempt_at") for it in items],
            [it.get("ack_deadline") for it in items],
            [it.get("dead_reason") for it in items],
            now,
        ],
    ).fetchone()
    assert row is not None
    return int(row[0]), row[1]


def test_event_type_patterns(conn):
    cases = [
        (["order.created"], "order.created", True),
        (["order.*"], "order.created", True),
        (["order.*"], "order.line.added", True),
        (["order.*"], "order", False),
        (["order.*"], "orders.created", False),
        (["*"], "anything.at_all", True),
        (["*"], "system.startup", False),
        (["*"], "whk.webhook.disabled", False),
        (["system.*"], "system.startup", True),
        (["*", "whk.webhook.disabled"], "whk.webhook.disabled", True),
        (["user.created", "product.*"], "product.deleted", True),
        (["user.created"], "user.updated", False),
    ]
    for patterns, event_type, expected in cases:
        row = conn.execute("SELECT whk.event_type_matches(%s, %s)", [patterns, event_type]).fetchone()
        assert row == (expected,), (patterns, event_type)


def test_routing_fans_out_in_one_pass_and_keeps_unsubscribed_events(conn):
    c = make_consumer(conn)
    exact = make_webhook(conn, c, URL, ["order.created"])
    wild = make_webhook(conn, c, URL, ["order.*"])
    every = make_webhook(conn, c, URL, ["*"])
    filtered = make_webhook(conn, c, URL, ["order.created"], filter="$.data.total > 100")
    paused = make_webhook(conn, c, URL, ["order.created"], status="paused")  # routed: waits, pending
    make_webhook(conn, c, URL, ["order.created"], status="disabled")
    deleted = make_webhook(conn, c, URL, ["order.created"])
    conn.execute("UPDATE whk.whk_01_webhooks SET deleted_at = now() WHERE id = %s", [deleted])
    emit(conn, "order.created", {"total": 50})
    emit(conn, "order.created", {"total": 500})
    emit(conn, "order.shipped", {"total": 500})
    emit(conn, "nobody.listens")

    assert route(conn) == 4
    counts = dict(conn.execute("SELECT webhook_id, count(*) FROM whk.whk_03_entregas GROUP BY 1").fetchall())
    assert counts == {exact: 2, wild: 3, every: 4, filtered: 1, paused: 2}
    rows = conn.execute("SELECT status, commit_seq FROM whk.outbox ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["routed"] * 4
    seqs = [r[1] for r in rows]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    # Routing again finds nothing and creates nothing twice.
    assert route(conn) == 0
    assert conn.execute("SELECT count(*) FROM whk.whk_03_entregas").fetchone() == (12,)


def test_routing_honours_delay_deliver_at_and_ordering_key(conn):
    c = make_consumer(conn)
    delayed = make_webhook(conn, c, URL, ["*"], delivery_mode="delayed", delay_seconds=60)
    ordered = make_webhook(conn, c, URL, ["*"], delivery_mode="ordered", ordering_key_path="$.data.customer")
    later = datetime.now(UTC) + timedelta(hours=1)
    emit(conn, "order.created", {"customer": "ann"}, key="k1")
    emit(conn, "order.created", {}, key="k2", deliver_at=later)
    route(conn)
    rows = conn.execute(
        "SELECT webhook_id, ordering_key, next_attempt_at FROM whk.whk_03_entregas ORDER BY webhook_id, id"
    ).fetchall()
    d1, d2, o1, o2 = rows
    assert d1[2] > datetime.now(UTC) + timedelta(seconds=50)
    assert d2[2] >= later + timedelta(seconds=60)
    assert (o1[0], o1[1]) == (ordered, "ann")
    assert o2[1] == "k2"  # no customer in the payload: the event key
    assert d1[0] == delayed and d1[1] is None


def test_claim_is_fair_and_respects_in_flight_cap(conn):
    c = make_consumer(conn)
    busy = make_webhook(conn, c, URL, ["busy.*"], max_in_flight=5)
    quiet = make_webhook(conn, c, URL, ["quiet.*"])
    emit(conn, "busy.event", count=50)
    emit(conn, "quiet.event")
    route(conn)
    rows = claim(conn, limit=100)
    per_hook: dict[int, int] = {}
    for r in rows:
        per_hook[r[1]] = per_hook.get(r[1], 0) + 1
    assert per_hook == {busy: 5, quiet: 1}
    # The cap holds across calls (and across dispatchers) until outcomes are recorded.
    assert claim(conn, limit=100, who="d2") == []


def test_the_claim_reads_the_callers_finished_requests_only_when_the_cap_binds(conn):
    """With room for every request asked for, the finished ones cannot change what is claimed: the claim
    does not spend a statement on them (it did on every claim of a busy dispatcher)."""
    c = make_consumer(conn)
    hook = make_webhook(conn, c, URL, ["cap.*"], max_in_flight=3)
    emit(conn, "cap.e", count=6)
    route(conn)
    sql = "SELECT delivery_id FROM whk.claim_deliveries('d1', %s, 30, %s::bigint[])"
    first, plans = explained(conn, sql, [2, [-1]])
    assert len(first) == 2
    assert "p_finished" not in plans  # room for 3 requests, 2 asked for
    finished = [int(first[0][0])]
    # The cap binds now (2 of 3 in flight, 2 asked for): the finished request frees its slot.
    again, plans = explained(conn, sql, [2, finished])
    assert "d.id = ANY (p_finished)" in plans
    assert len(again) == 2
    assert statuses(conn, hook) == {"in_flight": 4, "pending": 2}


def test_the_cap_does_not_count_the_callers_finished_unrecorded_requests(conn):
    """p_finished (migration 0022): a finished request is off the wire although its outcome is not written
    yet; only the dispatcher that sent it can say so, and batch caps count such a batch as finished too."""
    c = make_consumer(conn)
    hook = make_webhook(conn, c, URL, ["cap.*"], max_in_flight=2)
    batched = make_webhook(conn, c, URL, ["bat.*"], max_in_flight=1, delivery_mode="batch", batch_size=2)
    emit(conn, "cap.e", count=6)
    emit(conn, "bat.e", count=4)
    route(conn)

    def claim_with(finished: list[int], who: str = "d1") -> list[tuple[int, int, Any]]:
        return [(int(r[0]), int(r[1]), r[2]) for r in claim(conn, 100, who, finished)]

    first = claim_with([])
    sent = [d for d, w, _ in first if w == hook]
    batch = [d for d, w, _ in first if w == batched]
    assert len(sent) == 2 and len(batch) == 2
    assert claim_with([]) == []  # both caps are full
    # Another dispatcher cannot free d1's slots; a bogus or NULL list changes nothing.
    assert claim_with(sent + batch, who="d2") == []
    assert claim_with([-1]) == []
    assert conn.execute("SELECT count(*) FROM whk.claim_deliveries('d1', 100, 30, NULL)").fetchone() == (0,)
    # d1 finished one immediate request and the batch: one more request each, nothing beyond the caps.
    again = claim_with(sent[:1] + batch)
    assert len([d for d, w, _ in again if w == hook]) == 1
    assert len({b for _, w, b in again if w == batched}) == 1  # one more batch request (of batch_size rows)
    assert len([1 for _, w, _ in again if w == batched]) == 2
    assert statuses(conn, hook) == {"in_flight": 3, "pending": 3}  # written outcomes come later
    # route_and_take applies the same rule to fresh events.
    conn.execute("UPDATE whk.delivery_queue SET status = 'delivered' WHERE status = 'pending'")
    emit(conn, "cap.e", count=3)
    in_flight = [
        int(r[0])
        for r in conn.execute(
            "SELECT id FROM whk.whk_03_entregas WHERE webhook_id = %s AND status = 'in_flight'", [hook]
        ).fetchall()
    ]
    _, rows = take(conn, 10, finished=in_flight[:2])
    assert len(rows) == 1  # cap 2, three in flight, two of them finished: room for one


def test_claim_by_another_dispatcher_skips_locked_rows(db_url, conn):
    c = make_consumer(conn)
    make_webhook(conn, c, URL, ["*"], max_in_flight=100)
    emit(conn, "a.b", count=20)
    route(conn)
    with psycopg.connect(db_url) as other:  # a transaction left open: its claim holds row locks
        first = other.execute("SELECT delivery_id FROM whk.claim_deliveries('d2', 100, 30)").fetchall()
        assert len(first) == 20
        # The runtime row is locked by d2's open transaction: d1 skips the webhook instead of waiting.
        assert claim(conn, who="d1") == []
    assert claim(conn, who="d1") == []  # committed: all 20 are in flight now


def test_ordered_lane_head_blocks_only_its_key(conn):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, URL, ["*"], delivery_mode="ordered")
    emit(conn, "o.e", key="A", count=3)
    emit(conn, "o.e", key="B", count=3)
    route(conn)
    heads = claim(conn)
    assert sorted(r[4] for r in heads) == ["A", "B"]
    a_head = next(r for r in heads if r[4] == "A")
    b_head = next(r for r in heads if r[4] == "B")
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    record(conn, [{"id": a_head[0], "webhook_id": hook, "state": "pending", "next_attempt_at": later}])
    record(conn, [{"id": b_head[0], "webhook_id": hook, "state": "delivered"}])
    nxt = claim(conn)
    # A's head waits for its retry; A's later events may not overtake it. B moves on.
    assert [r[4] for r in nxt] == ["B"]
    assert nxt[0][3] > b_head[3]


def test_batch_waits_for_size_or_window(conn):
    c = make_consumer(conn)
    make_webhook(conn, c, URL, ["*"], delivery_mode="batch", batch_size=10, batch_window_ms=3_600_000)
    emit(conn, "b.e", count=9)
    route(conn)
    assert claim(conn) == []  # 9 < 10 and the window is an hour
    emit(conn, "b.e", count=15)
    route(conn)
    rows = claim(conn)
    assert len(rows) == 10
    assert len({r[2] for r in rows}) == 1 and rows[0][2] is not None
    assert [r[3] for r in rows] == sorted(r[3] for r in rows)


def test_token_bucket_limits_requests(conn):
    c = make_consumer(conn)
    make_webhook(conn, c, URL, ["*"], rate_limit_per_second=3, rate_limit_burst=3, max_in_flight=100)
    emit(conn, "r.e", count=20)
    route(conn)
    assert len(claim(conn)) == 3
    assert claim(conn) == []  # bucket empty (refill is 3/s, the call is immediate)
    left = conn.execute("SELECT tokens FROM whk.webhook_runtime").fetchone()
    assert left is not None and left[0] < 1


def test_consumer_quota_is_shared_by_its_webhooks(conn):
    c = make_consumer(conn, quota_deliveries_per_day=4)
    make_webhook(conn, c, URL, ["*"])
    make_webhook(conn, c, URL, ["*"])
    emit(conn, "q.e", count=5)
    route(conn)
    assert len(claim(conn)) == 4
    assert claim(conn) == []


def probe_time(conn: psycopg.Connection[Any], hook: int) -> datetime:
    """Just after the open breaker's probe is due."""
    row = conn.execute(
        "SELECT probe_at + interval '1 ms' FROM whk.webhook_runtime WHERE webhook_id = %s", [hook]
    ).fetchone()
    assert row is not None and row[0] is not None
    return row[0]  # type: ignore[no-any-return]


def test_breaker_opens_probes_and_closes(conn):
    c = make_consumer(conn)
    hook = make_webhook(
        conn, c, URL, ["*"], breaker_config={"failure_threshold": 3, "open_s": 60}, max_in_flight=50
    )
    emit(conn, "x.y", count=10)
    route(conn)
    first = claim(conn, limit=3)
    now = datetime.now(UTC).isoformat()
    record(
        conn, [{"id": r[0], "webhook_id": hook, "state": "pending", "next_attempt_at": now} for r in first]
    )
    state = conn.execute(
        "SELECT breaker_state FROM whk.webhook_runtime WHERE webhook_id = %s", [hook]
    ).fetchone()
    assert state == ("open",)
    assert claim(conn) == []  # open: nothing, although 10 are due
    later = probe_time(conn, hook)  # the open period is over then (asked for, not slept through)
    probe = claim(conn, now=later)
    assert len(probe) == 1
    assert claim(conn, now=later) == []  # half-open: only the one probe
    record(conn, [{"id": probe[0][0], "webhook_id": hook, "state": "delivered"}], now=later)
    state = conn.execute(
        "SELECT breaker_state FROM whk.webhook_runtime WHERE webhook_id = %s", [hook]
    ).fetchone()
    assert state == ("closed",)
    assert len(claim(conn, now=later)) == 9


def test_record_outcomes_returns_the_breaker_transitions_it_makes(conn):
    """The second output names each breaker the flush moved (the dispatcher's Prometheus counter); a flush
    that moves none returns NULL."""
    c = make_consumer(conn)
    hook = make_webhook(
        conn, c, URL, ["*"], breaker_config={"failure_threshold": 3, "open_s": 0.2}, max_in_flight=50
    )
    other = make_webhook(conn, c, URL + "/other", ["*"], max_in_flight=50)
    emit(conn, "x.y", count=10)
    route(conn)

    def fail(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]] | None:
        now = datetime.now(UTC).isoformat()
        items = [{"id": r[0], "webhook_id": r[1], "state": "pending", "next_attempt_at": now} for r in rows]
        return record_full(conn, items)[1]

    def probe() -> list[tuple[Any, ...]]:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            rows = [r for r in claim(conn, limit=100) if r[1] == hook]
            if rows:
                return rows
        raise AssertionError("the breaker never let a probe through")

    taken = claim(conn, limit=100)
    mine = [r for r in taken if r[1] == hook]
    theirs = [r for r in taken if r[1] == other]
    assert fail(mine[:2]) is None  # two failures: still closed
    assert fail(mine[2:3] + theirs[:1]) == [{"webhook_id": hook, "from": "closed", "to": "open"}]
    assert fail(mine[3:4]) is None  # open already (an attempt that was in flight): no transition
    assert fail(probe()) == [{"webhook_id": hook, "from": "half_open", "to": "open"}]
    (last,) = probe()
    applied, moved = record_full(conn, [{"id": last[0], "webhook_id": hook, "state": "delivered"}])
    assert (applied, moved) == (1, [{"webhook_id": hook, "from": "half_open", "to": "closed"}])


def test_gone_disables_webhook_parks_pending_and_emits_event(conn):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, URL, ["*"], max_in_flight=1)
    emit(conn, "g.e", count=3)
    route(conn)
    (first,) = claim(conn)
    record(
        conn, [{"id": first[0], "webhook_id": hook, "state": "parked", "gone": True, "response_status": 410}]
    )
    assert statuses(conn, hook) == {"parked": 3}
    row = conn.execute(
        "SELECT status, disabled_reason FROM whk.whk_01_webhooks WHERE id = %s", [hook]
    ).fetchone()
    assert row == ("disabled", "endpoint answered 410 Gone")
    ev = conn.execute(
        "SELECT payload->'data'->>'webhook_id' FROM whk.outbox_events"
        " WHERE event_type = 'whk.webhook.disabled'"
    ).fetchall()
    assert ev == [(str(hook),)]
    # Resuming brings the parked deliveries back, same rows (same event ids).
    assert conn.execute("SELECT whk.resume_webhook(%s)", [hook]).fetchone() == (3,)
    assert statuses(conn, hook) == {"pending": 3}


def test_attempt_log_and_dead_letter(conn):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, URL, ["*"])
    emit(conn, "d.e")
    route(conn)
    (row,) = claim(conn)
    record(
        conn,
        [
            {
                "id": row[0],
                "webhook_id": hook,
                "state": "dead",
                "dead_reason": "HTTP 500 (after 8 attempts)",
                "attempt_no": 8,
                "response_status": 500,
                "request_headers": {"Authorization": "***"},
                "response_body": "boom",
                "duration_ms": 12.5,
            }
        ],
    )
    d = conn.execute(
        "SELECT status, dead_reason, attempts, last_status_code FROM whk.whk_03_entregas WHERE id = %s",
        [row[0]],
    ).fetchone()
    assert d == ("dead", "HTTP 500 (after 8 attempts)", 8, 500)
    log = conn.execute(
        "SELECT attempt_no, dispatcher_id, response_body, request_headers FROM whk.whk_03_entregas_tentativas"
    ).fetchone()
    assert log == (8, "d1", "boom", {"Authorization": "***"})
    # Manual retry: pending again, a fresh schedule, same event id.
    assert conn.execute("SELECT whk.retry_delivery(%s)", [row[0]]).fetchone() == (True,)
    d = conn.execute(
        "SELECT status, schedule_offset, dead_reason FROM whk.whk_03_entregas WHERE id = %s", [row[0]]
    ).fetchone()
    assert d == ("pending", 8, None)


def test_outcome_of_a_lost_lease_is_logged_but_not_applied(conn):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, URL, ["*"])
    emit(conn, "l.e")
    route(conn)
    (row,) = claim(conn, who="d1")
    assert conn.execute("SELECT whk.reclaim_expired_leases()").fetchone() == (0,)  # its lease holds
    assert conn.execute("SELECT whk.reclaim_expired_leases(now() + interval '1 min')").fetchone() == (1,)
    (again,) = claim(conn, who="d2")
    assert again[0] == row[0]
    assert record(conn, [{"id": row[0], "webhook_id": hook, "state": "delivered"}], who="d1") == 0
    assert statuses(conn, hook) == {"in_flight": 1}
    assert record(conn, [{"id": row[0], "webhook_id": hook, "state": "delivered"}], who="d2") == 1
    assert conn.execute("SELECT count(*) FROM whk.whk_03_entregas_tentativas").fetchone() == (2,)


def test_release_and_ack_flow(conn):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, URL, ["*"], require_ack=True)
    emit(conn, "a.e", count=2)
    route(conn)
    rows = claim(conn)
    assert conn.execute("SELECT whk.release_deliveries('d1')").fetchone() == (2,)
    assert statuses(conn, hook) == {"pending": 2}
    rows = claim(conn)
    soon = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    record(
        conn,
        [
            {"id": rows[0][0], "webhook_id": hook, "state": "awaiting_ack", "ack_deadline": later},
            {"id": rows[1][0], "webhook_id": hook, "state": "awaiting_ack", "ack_deadline": soon},
        ],
    )
    assert conn.execute("SELECT whk.ack_delivery(%s)", [rows[0][0]]).fetchone() == (True,)
    assert conn.execute("SELECT whk.ack_delivery(%s)", [rows[0][0]]).fetchone() == (True,)  # idempotent
    assert conn.execute("SELECT whk.expire_acks()").fetchone() == (1,)
    assert statuses(conn, hook) == {"delivered": 1, "pending": 1}


def test_auto_disable_after_unbroken_failure_window(conn):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, URL, ["*"])
    conn.execute("SELECT whk.ensure_webhook_runtime()")
    conn.execute(
        "UPDATE whk.webhook_runtime SET failing_since = now() - interval '6 days' WHERE webhook_id = %s",
        [hook],
    )
    assert conn.execute("SELECT whk.auto_disable_webhooks()").fetchone() == (1,)
    assert conn.execute("SELECT status FROM whk.whk_01_webhooks WHERE id = %s", [hook]).fetchone() == (
        "disabled",
    )
    assert conn.execute("SELECT whk.auto_disable_webhooks()").fetchone() == (0,)


def test_routing_flags_invalid_non_strict_events_but_delivers_them(conn):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, URL, ["user.*", "nobody.*"])
    emit(conn, "user.logout", {"user_id": 1})  # registered (capture seed), misses required properties
    emit(conn, "user.logout", {"user_id": 1, "session_id": 2, "at": "2026-01-01T00:00:00Z"})
    emit(conn, "nobody.listens")  # unregistered: not validated
    route(conn)
    rows = conn.execute("SELECT valid, validation_error FROM whk.outbox ORDER BY id").fetchall()
    assert rows[0][0] is False and rows[0][1]
    assert rows[1] == (True, None)
    assert rows[2] == (None, None)
    assert statuses(conn, hook) == {"pending": 3}


def test_dispatcher_disable_is_audited_when_the_audit_log_exists(conn):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, URL, ["*"])
    if conn.execute("SELECT to_regclass('whk.audit_log')").fetchone() == (None,):
        pytest.skip("the API migration (audit_log) is not in this build")
    set_up = conn.execute("SELECT max(id) FROM whk.audit_log").fetchone()[0] or 0  # the SQL set-up's rows
    conn.execute("SET whk.audited_by = 'dispatcher'")  # as the dispatcher's and the API's connections are
    assert conn.execute("SELECT whk.disable_webhook(%s, 'gone', 'whk-dispatcher')", [hook]).fetchone() == (
        True,
    )
    row = conn.execute(
        "SELECT actor, action, target_id, after->>'status' FROM whk.audit_log "
        "WHERE target_type = 'webhook' AND id > %s",
        [set_up],
    ).fetchone()
    assert row == ("whk-dispatcher", "webhook.disabled", str(hook), "disabled")
    # The API's own call (no actor) leaves auditing to the API.
    conn.execute("SELECT whk.resume_webhook(%s)", [hook])
    conn.execute("SELECT whk.disable_webhook(%s, 'operator')", [hook])
    assert conn.execute("SELECT count(*) FROM whk.audit_log WHERE id > %s", [set_up]).fetchone() == (1,)


def take(
    conn: psycopg.Connection[Any], n: int, who: str = "d1", finished: list[int] | None = None
) -> tuple[int, list[tuple[Any, ...]]]:
    rows = conn.execute(
        "SELECT routed, delivery_id, webhook_id, batch_id, payload"
        " FROM whk.route_and_take(1000, %s, %s, 30, %s::bigint[])",
        [who, n, finished or []],
    ).fetchall()
    return int(rows[0][0]), [r[1:] for r in rows if r[1] is not None]


def test_route_and_take_hands_fresh_deliveries_over_in_flight_within_every_limit(conn):
    c = make_consumer(conn)
    quick = make_webhook(conn, c, URL, ["t.*"], max_in_flight=3)
    limited = make_webhook(conn, c, URL, ["t.*"], rate_limit_per_second=100)
    batched = make_webhook(conn, c, URL, ["t.*"], delivery_mode="batch", batch_size=2)
    broken = make_webhook(conn, c, URL, ["t.*"])
    conn.execute("INSERT INTO whk.webhook_runtime (webhook_id) SELECT id FROM whk.whk_01_webhooks")
    conn.execute(
        "UPDATE whk.webhook_runtime SET breaker_state = 'open', probe_at = now() + interval '1 hour' "
        "WHERE webhook_id = %s",
        [broken],
    )
    emit(conn, "t.e", count=5)
    later = emit(conn, "t.e", deliver_at=datetime.now(UTC) + timedelta(hours=1))
    routed, taken = take(conn, 10)
    assert routed == 6
    by_hook: dict[int, list[tuple[Any, ...]]] = {}
    for d, w, b, p in taken:
        by_hook.setdefault(w, []).append((d, b, json.loads(p)["data"]["seq"]))
    # Only unconstrained webhooks, only events due now, only up to the in-flight cap (3 for `quick`)...
    assert sorted(by_hook) == [quick, batched]
    assert [seq for _, b, seq in by_hook[quick]] == [0, 1, 2] and all(b is None for _, b, _ in by_hook[quick])
    # ...and for a batch webhook only FULL batches (2 of size 2; the fifth event waits for its window).
    batches: dict[Any, list[int]] = {}
    for _, b, seq in by_hook[batched]:
        batches.setdefault(b, []).append(seq)
    assert None not in batches and sorted(batches.values()) == [[0, 1], [2, 3]]
    assert statuses(conn, quick) == {"in_flight": 3, "pending": 3}
    assert statuses(conn, batched) == {"in_flight": 4, "pending": 2}
    leased = conn.execute(
        "SELECT count(*) FROM whk.whk_03_entregas WHERE status = 'in_flight' AND claimed_by = 'd1' "
        "AND lease_until > now() AND event_id <> ALL(%s::uuid[])",
        [later],
    ).fetchone()
    assert leased == (7,)
    for hook in (limited, broken):
        assert statuses(conn, hook) == {"pending": 6}
    # The rest is claimed the usual way (`quick` is at its cap: nothing more for it).
    assert quick not in {r[1] for r in claim(conn, 100)}


def test_route_and_take_respects_free_slots_backlog_and_other_dispatchers(conn):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, URL, ["t.*"], max_in_flight=100)
    conn.execute("INSERT INTO whk.webhook_runtime (webhook_id) VALUES (%s)", [hook])
    emit(conn, "t.e", count=4)
    _, taken = take(conn, 2)  # the caller has two free slots
    assert len(taken) == 2 and statuses(conn, hook) == {"in_flight": 2, "pending": 2}
    # Two deliveries wait for the fair claim: a fresh event must not overtake them.
    emit(conn, "t.e")
    routed, taken = take(conn, 10)
    assert routed == 1 and taken == []
    assert len(claim(conn, 100)) == 3
    # No backlog now, but another transaction holds the webhook's runtime row (a claim in progress).
    emit(conn, "t.e", count=2)
    with psycopg.connect(conn.info.dsn) as other:
        other.execute("SELECT 1 FROM whk.webhook_runtime WHERE webhook_id = %s FOR UPDATE", [hook])
        routed, taken = take(conn, 10)
        other.rollback()
    assert routed == 2 and taken == []
    emit(conn, "t.e")
    assert len(claim(conn, 100)) == 2  # the two left pending; then the backlog is gone again
    routed, taken = take(conn, 10)
    assert routed == 1 and len(taken) == 1
    assert statuses(conn, hook) == {"in_flight": 8}


def test_routing_flags_malformed_data_instead_of_failing(conn):
    # A registered non-strict type is validated while routed; malformed data is flagged, not fatal.
    conn.execute(
        "INSERT INTO whk.outbox (event_type, data, operation) VALUES ('order.created', %s, 'EMIT')",
        ['"not an object"'],
    )
    assert route(conn) == 1
    row = conn.execute("SELECT status, valid, validation_error FROM whk.outbox").fetchone()
    assert row is not None and row[:2] == ("routed", False) and row[2].startswith("/data")
    # The envelope always carries its type now (whk.event_envelope); the validator still says what is
    # wrong with a body that has none instead of raising.
    assert conn.execute(
        "SELECT whk.validate_payload('order.created', NULL, '{\"data\": {}}')"
    ).fetchone() == ('/type: expected "order.created", got nothing',)


def test_breaker_reads_the_global_setting_and_doubles_up_to_open_max_s(conn):
    """The keys of whk/breaker.py BreakerConfig drive whk.record_outcomes: the seed row 'delivery.breaker'
    for a webhook without an override, and a webhook's own breaker_config member before it."""
    conn.execute(
        "UPDATE whk.whk_05_configuracoes SET value = %s::jsonb WHERE key = 'delivery.breaker'",
        [json.dumps({"failure_threshold": 2, "open_s": 10, "open_max_s": 15})],
    )
    c = make_consumer(conn)
    hook = make_webhook(conn, c, URL, ["*"], max_in_flight=50)
    own = make_webhook(conn, c, URL, ["*"], max_in_flight=50, breaker_config={"open_s": 1})
    emit(conn, "x.y", count=5)
    route(conn)

    def fail(rows: list[tuple[Any, ...]], at: datetime | None = None) -> None:
        due = (at or datetime.now(UTC)).isoformat()
        items = [{"id": r[0], "webhook_id": r[1], "state": "pending", "next_attempt_at": due} for r in rows]
        record(conn, items, now=at)

    def period(webhook: int) -> tuple[str, float | None]:
        row = conn.execute(
            "SELECT breaker_state, extract(epoch FROM probe_at - opened_at)::float8 "
            "FROM whk.webhook_runtime WHERE webhook_id = %s",
            [webhook],
        ).fetchone()
        assert row is not None
        return row[0], None if row[1] is None else round(row[1], 3)

    first = claim(conn, limit=100)
    fail([r for r in first if r[1] == hook][:1] + [r for r in first if r[1] == own][:2])
    assert period(hook) == ("closed", None)  # one failure: the global threshold is 2
    assert period(own) == ("open", 1.0)  # its own open_s, the global threshold
    at = datetime.now(UTC)
    expected = [10.0, 15.0, 15.0]  # open_s, then doubled (20) but capped at open_max_s, and again
    for want in expected:
        probe = [r for r in claim(conn, limit=100, now=at) if r[1] == hook]
        assert len(probe) == 1
        fail(probe, at)
        assert period(hook) == ("open", want)
        at = probe_time(conn, hook)
