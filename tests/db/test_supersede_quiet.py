"""Delayed delivery, completed (issue 20): supersede-by-key and per-consumer quiet hours, in SQL.

Time is passed in (whk.claim_deliveries' p_now, whk.quiet_until's p_at) instead of waited for.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from tests.db.test_sql_control_plane import psql
from tests.support.delivery import emit, make_consumer, make_webhook, route, statuses
from tests.support.pg import PgServer

pytestmark = pytest.mark.db

URL = "http://127.0.0.1:9/hook"
LISBON = ZoneInfo("Europe/Lisbon")
WEEKNIGHTS = {
    "time_zone": "Europe/Lisbon",
    "windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "22:00", "end": "07:00"}],
}


def claim(
    conn: psycopg.Connection[Any], now: datetime | None = None, who: str = "d1"
) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT delivery_id, webhook_id, payload FROM whk.claim_deliveries(%s, 100, 30, '{}', NULL, %s)",
        [who, now],
    ).fetchall()


def deliveries(conn: psycopg.Connection[Any], hook: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT id, status, superseded_by, attempts, next_attempt_at, ordering_key, event_id::text "
        "FROM whk.whk_03_entregas WHERE webhook_id = %s ORDER BY commit_seq",
        [hook],
    ).fetchall()
    keys = ("id", "status", "superseded_by", "attempts", "next_attempt_at", "ordering_key", "event_id")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def delayed_hook(conn: psycopg.Connection[Any], consumer: int, **cols: Any) -> int:
    cols.setdefault("delivery_mode", "delayed")
    cols.setdefault("delay_seconds", 300)
    return make_webhook(conn, consumer, URL, ["price.changed"], **cols)


# ----- supersede by key


def test_ten_delayed_updates_of_one_key_send_once_and_record_nine_superseded(conn):
    c = make_consumer(conn)
    hook = delayed_hook(conn, c, supersede_by_key=True)
    plain = delayed_hook(conn, c, name="no supersede")  # opt-in: this one gets every update
    # 10 price changes of one product, routed as they come (one per routing batch) and two more in one batch
    # for another product: superseding works across batches and inside one.
    for price in range(8):
        emit(conn, "price.changed", {"price": price}, key="sku-1")
        route(conn)
    emit(conn, "price.changed", {"price": 8}, key="sku-1")
    emit(conn, "price.changed", {"price": 9}, key="sku-1")
    emit(conn, "price.changed", {"price": 100}, key="sku-2")
    route(conn)

    rows = [r for r in deliveries(conn, hook) if r["ordering_key"] == "sku-1"]
    assert [r["status"] for r in rows] == ["superseded"] * 9 + ["pending"]
    last = rows[-1]
    by_id = {r["id"]: r for r in rows}
    for r in rows[:-1]:  # every superseded delivery names its replacement; the chain ends at the one sent
        nxt = r
        while nxt["status"] == "superseded":
            nxt = by_id[nxt["superseded_by"]]
        assert nxt["id"] == last["id"]
        assert r["attempts"] == 0
    # The replacement keeps the first change's due time: superseding never postpones the send.
    assert last["next_attempt_at"] == rows[0]["next_attempt_at"]
    assert statuses(conn, plain) == {"pending": 11}

    later = datetime.now(UTC) + timedelta(seconds=301)
    sent = [r for r in claim(conn, later) if r[1] == hook]
    prices = sorted(json.loads(p)["data"]["price"] for _, _, p in sent)
    assert prices == [9, 100]  # one request per key, each with the latest state
    assert statuses(conn, hook) == {"in_flight": 2, "superseded": 9}


def test_an_in_flight_delivery_is_not_superseded(conn):
    c = make_consumer(conn)
    hook = delayed_hook(conn, c, supersede_by_key=True)
    emit(conn, "price.changed", {"price": 1}, key="sku-1")
    route(conn)
    [(first, _, _)] = claim(conn, datetime.now(UTC) + timedelta(seconds=301))
    emit(conn, "price.changed", {"price": 2}, key="sku-1")
    route(conn)
    rows = deliveries(conn, hook)
    assert [(r["id"], r["status"]) for r in rows] == [(first, "in_flight"), (rows[1]["id"], "pending")]


def test_supersede_racing_a_claim_leaves_the_claimed_delivery_alone(db_url, conn):
    """A dispatcher's claim holds the older delivery (transaction still open) while routing supersedes: the
    routing waits for the claim's row lock, sees the row in flight and leaves it alone."""
    c = make_consumer(conn)
    hook = delayed_hook(conn, c, supersede_by_key=True)
    emit(conn, "price.changed", {"price": 1}, key="sku-1")
    route(conn)
    emit(conn, "price.changed", {"price": 2}, key="sku-1")
    errors: list[BaseException] = []

    with psycopg.connect(db_url) as dispatcher:  # not autocommit: the claim's locks stay held
        claimed = claim(dispatcher, datetime.now(UTC) + timedelta(seconds=301), who="d2")
        assert len(claimed) == 1

        def router() -> None:
            try:
                with psycopg.connect(db_url, autocommit=True) as other:
                    route(other)
            except BaseException as exc:  # re-raised by the test thread below
                errors.append(exc)

        t = threading.Thread(target=router)
        t.start()
        deadline = time.monotonic() + 20
        while True:  # the router is blocked on the claimed row's lock
            waiting = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE '%%route_and_take%%'"
            ).fetchone()
            if waiting and waiting[0] >= 1:
                break
            assert time.monotonic() < deadline, "routing never waited for the claim's lock"
            assert t.is_alive(), errors
            time.sleep(0.02)
        dispatcher.commit()
    t.join(timeout=20)
    assert not t.is_alive()
    assert not errors, errors
    rows = deliveries(conn, hook)
    assert [r["status"] for r in rows] == ["in_flight", "pending"]
    assert rows[0]["superseded_by"] is None


def test_a_claim_racing_an_uncommitted_supersede_skips_the_row(db_url, conn):
    """Routing has superseded the older delivery but not committed yet: a claim at that moment skips the row
    (SKIP LOCKED) instead of sending what is about to be superseded."""
    c = make_consumer(conn)
    hook = delayed_hook(conn, c, supersede_by_key=True)
    emit(conn, "price.changed", {"price": 1}, key="sku-1")
    route(conn)
    emit(conn, "price.changed", {"price": 2}, key="sku-1")
    later = datetime.now(UTC) + timedelta(seconds=301)
    with psycopg.connect(db_url) as router:  # not autocommit: the supersede's row locks stay held
        route(router)
        assert claim(conn, later) == []
    sent = claim(conn, later)
    assert [json.loads(p)["data"]["price"] for _, _, p in sent] == [2]
    assert statuses(conn, hook) == {"in_flight": 1, "superseded": 1}


def test_supersede_committed_first_means_the_claim_sends_only_the_newest(conn):
    c = make_consumer(conn)
    hook = delayed_hook(conn, c, supersede_by_key=True)
    emit(conn, "price.changed", {"price": 1}, key="sku-1")
    emit(conn, "price.changed", {"price": 2}, key="sku-1")
    route(conn)
    sent = claim(conn, datetime.now(UTC) + timedelta(seconds=301))
    assert [json.loads(p)["data"]["price"] for _, _, p in sent] == [2]
    assert statuses(conn, hook) == {"in_flight": 1, "superseded": 1}


def test_a_retrying_delivery_is_not_superseded_and_keyless_events_never_are(conn):
    c = make_consumer(conn)
    hook = delayed_hook(conn, c, supersede_by_key=True)
    emit(conn, "price.changed", {"price": 1}, key="sku-1")
    emit(conn, "price.changed", {"price": 1})  # no key
    route(conn)
    conn.execute(
        "UPDATE whk.delivery_queue SET attempts = 1 WHERE webhook_id = %s AND ordering_key = 'sku-1'", [hook]
    )
    emit(conn, "price.changed", {"price": 2}, key="sku-1")
    emit(conn, "price.changed", {"price": 2})
    route(conn)
    assert statuses(conn, hook) == {"pending": 4}


def test_supersede_is_refused_outside_delayed_mode(conn):
    c = make_consumer(conn)
    with pytest.raises(psycopg.errors.CheckViolation, match="supersede_delayed"):
        make_webhook(conn, c, URL, ["*"], supersede_by_key=True)


# ----- quiet hours


def lisbon(*args: int) -> datetime:
    return datetime(*args, tzinfo=LISBON)


@pytest.mark.parametrize(
    ("at", "until"),
    [
        (lisbon(2026, 12, 4, 23, 0), lisbon(2026, 12, 5, 7, 0)),  # Friday night runs into Saturday
        (lisbon(2026, 12, 8, 6, 59), lisbon(2026, 12, 8, 7, 0)),  # Tuesday morning: Monday's window
        (lisbon(2026, 12, 8, 22, 0), lisbon(2026, 12, 9, 7, 0)),  # start is inside
        (lisbon(2026, 12, 8, 7, 0), None),  # end is outside
        (lisbon(2026, 12, 6, 23, 0), None),  # Sunday night is not listed
        (lisbon(2026, 12, 7, 6, 0), None),  # so Monday morning is free
        (lisbon(2026, 7, 3, 23, 30), lisbon(2026, 7, 4, 7, 0)),  # summer time: local 07:00 all the same
    ],
)
def test_quiet_until_follows_the_local_windows(conn, at, until):
    row = conn.execute("SELECT whk.quiet_until(%s::jsonb, %s)", [json.dumps(WEEKNIGHTS), at]).fetchone()
    assert row is not None
    assert row[0] == until


@pytest.mark.parametrize(
    ("quiet", "urgent", "at", "until"),
    [
        (None, False, lisbon(2026, 12, 4, 23, 0), None),  # no quiet hours
        (WEEKNIGHTS, True, lisbon(2026, 12, 4, 23, 0), None),  # urgent webhooks are never held
        (WEEKNIGHTS, False, lisbon(2026, 12, 4, 23, 0), lisbon(2026, 12, 5, 7, 0)),  # held until the end
        (WEEKNIGHTS, False, lisbon(2026, 12, 8, 7, 0), None),  # outside every window
    ],
)
def test_quiet_hold_until_is_the_quiet_hours_rule(conn, quiet, urgent, at, until):
    row = conn.execute(
        "SELECT whk.quiet_hold_until(%s::jsonb, %s, %s)", [json.dumps(quiet) if quiet else None, urgent, at]
    ).fetchone()
    assert row is not None
    assert row[0] == until


# Every reader of the quiet-hours rule, and the alert query that must agree with the claim.
QUIET_RULE_READERS = ("claim_deliveries", "route_and_take", "dispatch_round", "next_wakeup", "explain")


def test_every_reader_asks_the_one_quiet_hours_rule(conn):
    bodies = dict(
        conn.execute(
            "SELECT p.proname, p.prosrc FROM pg_proc p "
            "WHERE p.pronamespace = 'whk'::regnamespace AND p.proname = ANY(%s)",
            [list(QUIET_RULE_READERS)],
        ).fetchall()
    )
    assert sorted(bodies) == sorted(QUIET_RULE_READERS)
    for name, body in bodies.items():
        assert "whk.quiet_hold_until(" in body, name
        assert "whk.quiet_until(" not in body, name
    alerting = (Path(__file__).resolve().parents[2] / "ops" / "alerting" / "queries.sql").read_text()
    assert "whk.quiet_hold_until(" in alerting
    assert "whk.quiet_until(" not in alerting


def test_quiet_hold_until_is_inlined_into_the_callers_plan(conn):
    # Inlined: the plan calls whk.quiet_until only, and only behind the quiet-hours and urgency tests.
    plan = "\n".join(
        r[0]
        for r in conn.execute(
            "EXPLAIN (VERBOSE, COSTS OFF) SELECT w.id FROM whk.whk_01_webhooks w "
            "JOIN whk.whk_04_assinantes a ON a.id = w.consumer_id "
            "WHERE whk.quiet_hold_until(a.quiet_hours, w.urgent, clock_timestamp()) IS NULL"
        ).fetchall()
    )
    assert "quiet_hold_until" not in plan
    assert "quiet_until(a.quiet_hours, clock_timestamp())" in plan


def test_touching_windows_are_joined(conn):
    quiet = {
        "time_zone": "UTC",
        "windows": [
            {"days": ["mon"], "start": "12:00", "end": "13:00"},
            {"days": ["mon"], "start": "13:00", "end": "14:30"},
        ],
    }
    at = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)  # a Monday
    row = conn.execute("SELECT whk.quiet_until(%s::jsonb, %s)", [json.dumps(quiet), at]).fetchone()
    assert row is not None
    assert row[0] == datetime(2026, 12, 7, 14, 30, tzinfo=UTC)


def test_quiet_hours_hold_non_urgent_deliveries_let_urgent_through_and_release_at_the_end(conn):
    c = make_consumer(conn)
    conn.execute("SELECT whk.set_consumer_quiet_hours(%s, %s::jsonb)", [c, json.dumps(WEEKNIGHTS)])
    calm = make_webhook(conn, c, URL, ["stock.low"], name="calm")
    urgent = make_webhook(conn, c, URL, ["stock.low"], name="pager", urgent=True)
    emit(conn, "stock.low", {"sku": "A"})
    route(conn)

    night = lisbon(2026, 12, 8, 23, 0)
    got = claim(conn, night)
    assert [r[1] for r in got] == [urgent]
    assert statuses(conn, calm) == {"pending": 1}
    assert claim(conn, lisbon(2026, 12, 9, 6, 59)) == []  # still quiet: waits, no attempt spent
    held = deliveries(conn, calm)[0]
    assert held["attempts"] == 0

    got = claim(conn, lisbon(2026, 12, 9, 7, 0))  # the window ends
    assert [r[1] for r in got] == [calm]


def test_a_quiet_consumer_costs_no_round_and_the_dispatcher_sleeps_until_the_window_ends(conn):
    # The window is around the real clock (next_wakeup and dispatch_round judge by it): started a minute ago,
    # ends in two hours, every day.
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start, end = now - timedelta(minutes=1), now + timedelta(hours=2)
    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    quiet = {
        "time_zone": "UTC",
        "windows": [{"days": days, "start": f"{start:%H:%M}", "end": f"{end:%H:%M}"}],
    }
    c = make_consumer(conn)
    conn.execute("SELECT whk.set_consumer_quiet_hours(%s, %s::jsonb)", [c, json.dumps(quiet)])
    calm = make_webhook(conn, c, URL, ["stock.low"])
    emit(conn, "stock.low", {"sku": "A"})

    rows = conn.execute(
        "SELECT routed, more_due, delivery_id FROM whk.dispatch_round('d1', 100, 10, 30)"
    ).fetchall()
    assert [r[2] for r in rows if r[2] is not None] == []  # not taken at routing either
    assert [r[1] for r in rows if r[2] is None] == [False]  # nothing due that a round could send
    assert statuses(conn, calm) == {"pending": 1}
    row = conn.execute("SELECT whk.next_wakeup()").fetchone()
    assert row is not None
    assert row[0] == end

    conn.execute("SELECT whk.set_consumer_quiet_hours(%s, NULL)", [c])
    row = conn.execute("SELECT whk.next_wakeup() <= clock_timestamp()").fetchone()
    assert row == (True,)


@pytest.mark.parametrize(
    ("quiet", "member"),
    [
        ({"time_zone": "Mars/Olympus_Mons", "windows": WEEKNIGHTS["windows"]}, "/time_zone"),
        ({"time_zone": "CEST", "windows": WEEKNIGHTS["windows"]}, "/time_zone"),
        ({"time_zone": "UTC+3", "windows": WEEKNIGHTS["windows"]}, "/time_zone"),
        ({"time_zone": "UTC", "windows": []}, "/windows"),
        (
            {"time_zone": "UTC", "windows": [{"days": ["mon"], "start": "24:00", "end": "07:00"}]},
            "/windows/0/start",
        ),
        (
            {"time_zone": "UTC", "windows": [{"days": ["mon"], "start": "22:00", "end": "7:00"}]},
            "/windows/0/end",
        ),
        (
            {"time_zone": "UTC", "windows": [{"days": ["mon"], "start": "22:00", "end": "22:00"}]},
            "/windows/0/end",
        ),
        (
            {"time_zone": "UTC", "windows": [{"days": ["monday"], "start": "22:00", "end": "07:00"}]},
            "/windows/0/days",
        ),
        (
            {"time_zone": "UTC", "windows": [{"days": ["mon", "mon"], "start": "22:00", "end": "07:00"}]},
            "/windows/0/days",
        ),
        ({"time_zone": "UTC", "windows": [{"days": ["mon"], "start": "22:00"}]}, "/windows/0"),
        ({"time_zone": "UTC", "windows": WEEKNIGHTS["windows"], "urgent": True}, ""),
        (5, ""),  # shapes that would break a careless check: scalars and lists where objects belong
        ({"time_zone": "UTC", "windows": 5}, "/windows"),
        ({"time_zone": "UTC", "windows": [5]}, "/windows/0"),
        ({"time_zone": "UTC", "windows": [{"days": 5, "start": "22:00", "end": "07:00"}]}, "/windows/0/days"),
        (
            {"time_zone": "UTC", "windows": [{"days": ["mon"], "start": 5, "end": "07:00"}]},
            "/windows/0/start",
        ),
    ],
)
def test_bad_quiet_hours_are_refused_naming_the_member(conn, quiet, member):
    c = make_consumer(conn)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        conn.execute("SELECT whk.set_consumer_quiet_hours(%s, %s::jsonb)", [c, json.dumps(quiet)])
    assert f"quiet_hours{member}: " in str(err.value)
    assert err.value.diag.message_hint and "time_zone" in err.value.diag.message_hint
    # Written around the function, the table's CHECK refuses it too.
    with pytest.raises(psycopg.errors.CheckViolation, match="quiet_hours_bounds"):
        conn.execute(
            "UPDATE whk.whk_04_assinantes SET quiet_hours = %s::jsonb WHERE id = %s", [json.dumps(quiet), c]
        )


def test_good_quiet_hours_are_stored_and_cleared(conn):
    c = make_consumer(conn)
    row = conn.execute(
        "SELECT whk.set_consumer_quiet_hours(%s, %s::jsonb)", [c, json.dumps(WEEKNIGHTS)]
    ).fetchone()
    assert row == (True,)
    stored = conn.execute("SELECT quiet_hours FROM whk.whk_04_assinantes WHERE id = %s", [c]).fetchone()
    assert stored == (WEEKNIGHTS,)
    conn.execute("SELECT whk.set_consumer_quiet_hours(%s, NULL)", [c])
    stored = conn.execute("SELECT quiet_hours FROM whk.whk_04_assinantes WHERE id = %s", [c]).fetchone()
    assert stored == (None,)
    # A SQL-side change of configuration: audited with the database role as the actor.
    trail = conn.execute(
        "SELECT actor, before -> 'quiet_hours', after -> 'quiet_hours' FROM whk.audit_log "
        "WHERE target_type = 'consumer' AND action = 'consumer.update' ORDER BY id"
    ).fetchall()
    assert trail == [("sql:postgres", None, WEEKNIGHTS), ("sql:postgres", WEEKNIGHTS, None)]


def test_the_sql_control_plane_sets_supersede_and_urgent_with_validation(conn):
    c = make_consumer(conn)
    with pytest.raises(
        psycopg.errors.InvalidParameterValue, match="supersede_by_key needs delivery_mode delayed"
    ):
        conn.execute(
            "SELECT whk.create_webhook(consumer_id => %s, name => 'p', url => %s, "
            "event_types => '{price.changed}', "
            "supersede_by_key => true)",
            [c, URL],
        )
    row = conn.execute(
        "SELECT whk.create_webhook(consumer_id => %s, name => 'p', url => %s, "
        "event_types => '{price.changed}', "
        "delivery_mode => 'delayed', delay_seconds => 300, supersede_by_key => true, urgent => true)",
        [c, URL],
    ).fetchone()
    assert row is not None
    flags = conn.execute(
        "SELECT supersede_by_key, urgent FROM whk.whk_01_webhooks WHERE id = %s", [row[0]]
    ).fetchone()
    assert flags == (True, True)


def test_a_dba_sets_both_up_in_psql(pg_server: PgServer, db_url: str, conn):
    """Supersede and quiet hours as a DBA's psql script uses them; a bad time zone stops the script with the
    member named and a HINT."""
    script = f"""
        SELECT whk.register_event_type('price.changed', '{{"type": "object"}}', 'a product price changed');
        SELECT whk.create_consumer(name => 'shop') AS consumer \\gset
        SELECT whk.create_webhook(consumer_id => :consumer, name => 'prices', url => '{URL}',
                                  event_types => '{{price.changed}}', delivery_mode => 'delayed',
                                  delay_seconds => 300, supersede_by_key => true) AS hook \\gset
        SELECT whk.set_consumer_quiet_hours(:consumer, '{json.dumps(WEEKNIGHTS)}');
        SELECT whk.emit('price.changed', jsonb_build_object('price', p), key => 'sku-1')
          FROM generate_series(1, 3) p;
        SELECT max(routed) FROM whk.route_and_take(1000, NULL, 0, 0);
        SELECT string_agg(status, ' ' ORDER BY commit_seq) FROM whk.whk_03_entregas WHERE webhook_id = :hook;
    """
    out = psql(pg_server, db_url, script).stdout.split("\n")
    assert out[-2] == "superseded superseded pending"
    bad = psql(
        pg_server,
        db_url,
        """SELECT whk.set_consumer_quiet_hours(id, '{"time_zone": "Europe/Atlantis", "windows": []}')
           FROM whk.whk_04_assinantes WHERE name = 'shop';""",
        ok=False,
    )
    assert "quiet_hours/time_zone: Europe/Atlantis is not a time zone" in bad.stderr
    assert "HINT:" in bad.stderr
