"""Fault isolation in SQL: a webhook whose row breaks a dispatcher round is found (whk.isolate_round_faults,
bisection with rolled-back probes) and quarantined; the next round serves everyone else; clearing the
quarantine after fixing the row brings its deliveries back."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.support.delivery import emit, make_consumer, make_webhook, route, statuses
from tests.support.faults import drop_checks, poison_claim, poison_global_default, poison_route

pytestmark = pytest.mark.db

URL = "http://127.0.0.1:9/hook"


def round_trip(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """One dispatcher round: (webhook_id, delivery_id) of every delivery taken or claimed."""
    rows = conn.execute(
        "SELECT webhook_id, delivery_id FROM whk.dispatch_round('d1', 100, 100, 30)"
    ).fetchall()
    return [r for r in rows if r[1] is not None]


def isolate(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    # As the dispatcher's connection: it audits its own changes (the quarantine), the SQL trigger does not.
    conn.execute("SET whk.audited_by = 'dispatcher'")
    try:
        return conn.execute("SELECT * FROM whk.isolate_round_faults('d1', 100, 30)").fetchall()
    finally:
        conn.execute("RESET whk.audited_by")


def quarantine(conn: psycopg.Connection[Any], hook: int) -> tuple[Any, ...] | None:
    return conn.execute(
        "SELECT quarantine_stage, quarantine_sqlstate, quarantine_reason, quarantined_at IS NOT NULL "
        "FROM whk.whk_01_webhooks WHERE id = %s",
        [hook],
    ).fetchone()


def test_a_poisoned_claim_quarantines_only_its_webhook(conn: psycopg.Connection[Any]):
    c = make_consumer(conn)
    hooks = [make_webhook(conn, c, URL, ["o.*"], delivery_mode="delayed") for _ in range(5)]
    bad = hooks[3]
    emit(conn, "o.e", count=2)
    route(conn, 100)  # delayed mode: pending, claimed by the fair claim
    poison_claim(conn, bad)
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        round_trip(conn)

    found = isolate(conn)
    assert [(r[0], r[1], r[2]) for r in found] == [(bad, "claim", "22003")]
    assert quarantine(conn, bad) == ("claim", "22003", found[0][3], True)
    audit = conn.execute(
        "SELECT actor, action, after ->> 'stage' FROM whk.audit_log "
        "WHERE target_id = %s AND actor NOT LIKE 'sql:%%'",
        [str(bad)],
    ).fetchall()
    assert audit == [("whk-dispatcher:d1", "webhook.quarantined", "claim")]
    assert conn.execute(
        "SELECT data ->> 'webhook_id' FROM whk.outbox WHERE event_type = 'whk.webhook.quarantined'"
    ).fetchall() == [(str(bad),)]

    claimed = round_trip(conn)  # the same round now serves every other webhook
    assert sorted({r[0] for r in claimed}) == sorted(h for h in hooks if h != bad)
    assert statuses(conn, bad) == {"pending": 2}
    assert isolate(conn) == []  # nothing left to find

    # Cleared without fixing the row: the next failure quarantines it again.
    assert conn.execute("SELECT whk.clear_webhook_quarantine(%s)", [bad]).fetchone() == (True,)
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        round_trip(conn)
    assert [r[0] for r in isolate(conn)] == [bad]
    # Fixed, then cleared: its deliveries are claimed, nothing lost.
    conn.execute("UPDATE whk.whk_01_webhooks SET rate_limit_per_second = NULL WHERE id = %s", [bad])
    assert conn.execute("SELECT whk.clear_webhook_quarantine(%s)", [bad]).fetchone() == (True,)
    assert conn.execute("SELECT whk.clear_webhook_quarantine(%s)", [bad]).fetchone() == (False,)
    assert quarantine(conn, bad) == (None, None, None, False)
    assert sorted(r[1] for r in round_trip(conn) if r[0] == bad) == sorted(
        r[0]
        for r in conn.execute("SELECT id FROM whk.whk_03_entregas WHERE webhook_id = %s", [bad]).fetchall()
    )


def test_bisection_finds_every_culprit_among_many(conn: psycopg.Connection[Any]):
    c = make_consumer(conn)
    hooks = [make_webhook(conn, c, URL, ["o.*"], delivery_mode="delayed") for _ in range(20)]
    emit(conn, "o.e")
    route(conn, 100)
    bad = {hooks[0], hooks[7], hooks[19]}
    for h in bad:
        poison_claim(conn, h)
    found = isolate(conn)
    assert {r[0] for r in found} == bad and {r[1] for r in found} == {"claim"}
    assert {r[0] for r in round_trip(conn)} == set(hooks) - bad


def test_a_poisoned_route_stops_routing_to_that_webhook_only(conn: psycopg.Connection[Any]):
    c = make_consumer(conn)
    good = make_webhook(conn, c, URL, ["o.*"])
    bad = make_webhook(conn, c, URL, ["o.*"])
    poison_route(conn, bad)
    emit(conn, "o.e")
    with pytest.raises(psycopg.errors.DivisionByZero):
        round_trip(conn)
    assert [(r[0], r[1], r[2]) for r in isolate(conn)] == [(bad, "route", "22012")]
    assert [r[0] for r in round_trip(conn)] == [good]  # routed and taken for the healthy webhook
    assert statuses(conn, bad) == {}  # not routed to while quarantined at the routing stage


def test_a_global_fault_quarantines_nobody(conn: psycopg.Connection[Any]):
    c = make_consumer(conn)
    hooks = [make_webhook(conn, c, URL, ["o.*"], delivery_mode="delayed") for _ in range(3)]
    emit(conn, "o.e")
    route(conn, 100)
    poison_global_default(conn)
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        round_trip(conn)
    found = isolate(conn)
    assert [(r[0], r[1], r[2]) for r in found] == [(None, "claim", "22P02")]
    assert conn.execute(
        "SELECT count(*) FROM whk.whk_01_webhooks WHERE id = ANY(%s) AND quarantined_at IS NOT NULL", [hooks]
    ).fetchone() == (0,)


def test_resume_lifts_a_quarantine(conn: psycopg.Connection[Any]):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, URL)
    conn.execute("SELECT whk.quarantine_webhook(%s, 'claim', 'boom', '22003')", [hook])
    assert conn.execute("SELECT whk.quarantine_webhook(%s, 'route', 'again')", [hook]).fetchone() == (False,)
    assert quarantine(conn, hook) == ("claim", "22003", "boom", True)  # the first error is kept
    conn.execute("UPDATE whk.whk_01_webhooks SET status = 'paused' WHERE id = %s", [hook])
    conn.execute("SELECT whk.resume_webhook(%s)", [hook])
    assert quarantine(conn, hook) == (None, None, None, False)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        conn.execute("SELECT whk.quarantine_webhook(%s, 'lunch', 'x')", [hook])
    assert err.value.diag.message_hint


def test_a_claim_that_fails_on_deliveries_routed_in_the_same_round(conn: psycopg.Connection[Any]):
    """The failed round routed the culprit's deliveries and rolled them back with it: the probes route
    first, as the round did, or nothing would reproduce."""
    c = make_consumer(conn)
    good = make_webhook(conn, c, URL, ["o.*"])
    bad = make_webhook(conn, c, URL, ["o.*"])
    poison_claim(conn, bad)
    emit(conn, "o.e", count=3)
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        round_trip(conn)
    assert statuses(conn, bad) == {} and statuses(conn, good) == {}  # rolled back, events unrouted
    assert [(r[0], r[1]) for r in isolate(conn)] == [(bad, "claim")]
    assert statuses(conn, bad) == {}  # the probes left nothing behind
    assert sorted({r[0] for r in round_trip(conn)}) == [good]
    assert statuses(conn, bad) == {"pending": 3}  # routed, waiting for the quarantine to be cleared


def test_the_denormal_rate_of_the_issue_no_longer_breaks_a_claim(conn: psycopg.Connection[Any]):
    """rate_limit_per_second = 5e-324 (what black-box runs found) made the token bucket underflow. The
    CHECK refuses it now; a row that still holds it (CHECK dropped) is clamped to the rate's floor before
    any arithmetic, so the claim serves both webhooks and quarantines nobody."""
    c = make_consumer(conn)
    good = make_webhook(conn, c, URL, ["o.*"], delivery_mode="delayed")
    bad = make_webhook(conn, c, URL, ["o.*"], delivery_mode="delayed")
    emit(conn, "o.e")
    route(conn, 100)
    drop_checks(conn, "whk_01_webhooks", "rate_limit_per_second")
    conn.execute("UPDATE whk.whk_01_webhooks SET rate_limit_per_second = 5e-324 WHERE id = %s", [bad])
    conn.execute(
        "UPDATE whk.webhook_runtime SET tokens = 1, tokens_at = clock_timestamp() WHERE webhook_id = %s",
        [bad],
    )
    assert sorted(r[0] for r in round_trip(conn)) == sorted([good, bad])
    assert isolate(conn) == []
    assert quarantine(conn, bad) == (None, None, None, False)


def test_a_quarantine_does_not_age_into_an_auto_disable(conn: psycopg.Connection[Any]):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, URL)
    conn.execute("SELECT whk.ensure_webhook_runtime()")
    conn.execute(
        "UPDATE whk.webhook_runtime SET failing_since = now() - interval '6 days' WHERE webhook_id = %s",
        [hook],
    )
    conn.execute("SELECT whk.quarantine_webhook(%s, 'ssrf', 'ssrf_blocked: loopback')", [hook])
    assert conn.execute("SELECT whk.auto_disable_webhooks()").fetchone() == (0,)
    conn.execute("SELECT whk.clear_webhook_quarantine(%s)", [hook])
    assert conn.execute("SELECT whk.auto_disable_webhooks()").fetchone() == (0,)  # the window restarted
    assert conn.execute("SELECT status FROM whk.whk_01_webhooks WHERE id = %s", [hook]).fetchone() == (
        "active",
    )


def test_a_poison_event_is_no_webhooks_fault_and_the_claim_goes_on(conn: psycopg.Connection[Any]):
    """An event whose validation raises (its type's schema was edited by hand to an invalid regular
    expression) breaks routing for every webhook: nobody is quarantined, routing is reported as failing on
    its own, and the claim, probed without routing, still works: the dispatcher keeps claiming."""
    c = make_consumer(conn)
    hooks = [make_webhook(conn, c, URL, ["o.*", "t.*"], delivery_mode="delayed") for _ in range(3)]
    emit(conn, "o.e")
    route(conn, 100)  # one due delivery per webhook
    schema = '{"type": "object", "properties": {"x": {"type": "string", "pattern": "^[a-z]+$"}}}'
    conn.execute("SELECT whk.register_event_type('t.poison', %s::jsonb)", [schema])
    conn.execute(
        "UPDATE whk.whk_02_eventos_versoes v "
        "SET schema = jsonb_set(v.schema, '{properties,x,pattern}', '\"(\"') "
        "FROM whk.whk_02_eventos e WHERE e.id = v.event_type_id AND e.name = 't.poison'"
    )
    emit(conn, "t.poison", {"x": "abc"})
    with pytest.raises(psycopg.errors.InvalidRegularExpression):
        round_trip(conn)
    assert [(r[0], r[1], r[2]) for r in isolate(conn)] == [(None, "route", "2201B")]
    assert conn.execute(
        "SELECT count(*) FROM whk.whk_01_webhooks WHERE quarantined_at IS NOT NULL"
    ).fetchone() == (0,)
    # What the engine then does while routing is off: claim-only rounds.
    claimed = conn.execute("SELECT webhook_id FROM whk.dispatch_round('d1', 0, 100, 30)").fetchall()
    assert sorted(r[0] for r in claimed if r[0] is not None) == sorted(hooks)
