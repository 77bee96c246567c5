"""Payload versions rendered per subscriber (issue 20): transforms between the majors of an event type.

A webhook pinned to a major (payload_version) receives every event of its types rendered to that major
through registered SQL transforms, with a "version" member; publishing a major that would strand a pinned
webhook is refused, or with force parks its deliveries until a transform exists; a failing transform parks
only its own delivery.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from tests.db.test_delivery_sql import URL, claim
from tests.db.test_sql_control_plane import psql
from tests.support.delivery import make_consumer, make_webhook, route, statuses
from tests.support.pg import PgServer

pytestmark = pytest.mark.db

TYPE = "shop.order_paid"
V1 = {"type": "object", "required": ["amount"], "properties": {"amount": {"type": "integer"}}}
V2 = {
    "type": "object",
    "required": ["amount_cents", "currency"],
    "properties": {"amount_cents": {"type": "integer"}, "currency": {"type": "string"}},
}
V3 = {
    "type": "object",
    "required": ["money"],
    "properties": {"money": {"type": "object"}},
}

# v2 -> v1: cents back to whole units; v3 -> v2: the money object flattened; v1 -> v2 for a subscriber
# pinned ahead. 1 / 0 raises for a negative amount: the failing transform of the isolation test.
TRANSFORMS = """
CREATE SCHEMA erp_tx;
GRANT USAGE ON SCHEMA erp_tx TO whk_dispatcher;
CREATE FUNCTION erp_tx.paid_v2_to_v1(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
    RETURN jsonb_build_object('amount', (data ->> 'amount_cents')::int / 100
                                        / CASE WHEN (data ->> 'amount_cents')::int < 0 THEN 0 ELSE 1 END);
CREATE FUNCTION erp_tx.paid_v3_to_v2(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
    RETURN jsonb_build_object('amount_cents', data #> '{money,cents}',
                              'currency', data #> '{money,currency}');
CREATE FUNCTION erp_tx.paid_v1_to_v2(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
    RETURN jsonb_build_object('amount_cents', (data ->> 'amount')::int * 100, 'currency', 'BRL');
"""


def register(conn: psycopg.Connection[Any], schema: dict[str, Any], **kw: Any) -> str:
    args = ", ".join(f"{k} => %({k})s" for k in kw)
    row = conn.execute(
        f"SELECT whk.register_event_type(%(t)s, %(s)s::jsonb{', ' if kw else ''}{args})",
        {"t": TYPE, "s": json.dumps(schema), **kw},
    ).fetchone()
    assert row is not None
    return str(row[0])


def transform(conn: psycopg.Connection[Any], from_major: int, to_major: int, fn: str) -> int:
    row = conn.execute(
        "SELECT whk.register_event_transform(%s, %s, %s, %s)", [TYPE, from_major, to_major, fn]
    ).fetchone()
    assert row is not None
    return int(row[0])


def emit(conn: psycopg.Connection[Any], data: dict[str, Any]) -> str:
    row = conn.execute("SELECT whk.emit(%s, %s::jsonb)::text", [TYPE, json.dumps(data)]).fetchone()
    assert row is not None
    return str(row[0])


def bodies(conn: psycopg.Connection[Any]) -> dict[int, dict[str, Any]]:
    """Claim everything due and return the body each webhook got (one delivery each)."""
    got: dict[int, dict[str, Any]] = {}
    for _id, hook, _b, _s, _k, payload in claim(conn):
        assert hook not in got
        got[hook] = json.loads(payload)
    return got


def parked(conn: psycopg.Connection[Any], hook: int) -> list[tuple[str, str | None]]:
    return [
        (r[0], r[1])
        for r in conn.execute(
            "SELECT status, render_problem FROM whk.whk_03_entregas WHERE webhook_id = %s ORDER BY id", [hook]
        ).fetchall()
    ]


@pytest.fixture
def shop(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute(TRANSFORMS)
    assert register(conn, V1) == "1.0"
    return conn


def test_v1_and_v2_subscribers_each_get_their_shape_from_one_commit(shop: psycopg.Connection[Any]) -> None:
    conn = shop
    c = make_consumer(conn)
    v1 = make_webhook(conn, c, URL, [TYPE], payload_version=1)
    v2 = make_webhook(conn, c, URL, ["shop.*"], payload_version=2)
    anyv = make_webhook(conn, c, URL, [TYPE])
    # The bridge may be registered before the major it starts from is published (the next major).
    assert transform(conn, 2, 1, "erp_tx.paid_v2_to_v1") == 0
    assert register(conn, V2, new_major=True) == "2.0"

    with conn.transaction():  # one commit, one event
        event_id = emit(conn, {"amount_cents": 1250, "currency": "BRL"})
    assert route(conn) == 1
    got = bodies(conn)
    ts = got[anyv]["timestamp"]
    assert got[v2] == {
        "type": TYPE,
        "timestamp": ts,
        "version": 2,
        "data": {"amount_cents": 1250, "currency": "BRL"},
    }
    assert got[v1] == {"type": TYPE, "timestamp": ts, "version": 1, "data": {"amount": 12}}
    # An unpinned webhook gets the event as it was emitted, as before.
    assert got[anyv] == {"type": TYPE, "timestamp": ts, "data": {"amount_cents": 1250, "currency": "BRL"}}
    ids = conn.execute("SELECT DISTINCT event_id::text FROM whk.whk_03_entregas").fetchall()
    assert ids == [(event_id,)]  # same webhook-id for every subscriber

    # Taken at routing time (route_and_take hands it over at once): the same rendered body.
    emit(conn, {"amount_cents": 300, "currency": "BRL"})
    rows = conn.execute(
        "SELECT webhook_id, payload FROM whk.route_and_take(100, 'd1', 10, 30) WHERE delivery_id IS NOT NULL"
    ).fetchall()
    taken = {r[0]: json.loads(r[1]) for r in rows}
    assert sorted(taken) == sorted([v1, v2, anyv])
    assert taken[v1]["data"] == {"amount": 3} and taken[v1]["version"] == 1
    assert "version" not in taken[anyv]


def test_chains_transforms_and_filters_the_rendered_body(shop: psycopg.Connection[Any]) -> None:
    conn = shop
    transform(conn, 2, 1, "erp_tx.paid_v2_to_v1")
    register(conn, V2, new_major=True)
    transform(conn, 3, 2, "erp_tx.paid_v3_to_v2(jsonb)")
    register(conn, V3, new_major=True)
    c = make_consumer(conn)
    # The filter is written for the subscriber's major (v1 has `amount`, v3 has not): it must read the
    # rendered body, else every event would be filtered out.
    big = make_webhook(conn, c, URL, [TYPE], payload_version=1, filter="$.data.amount > 10")
    v2 = make_webhook(conn, c, URL, [TYPE], payload_version=2)
    assert conn.execute(
        "SELECT whk.event_transform_path(%s, 3, 1), whk.event_transform_path(%s, 1, 3),"
        " whk.event_transform_path(%s, 2, 2)",
        [TYPE, TYPE, TYPE],
    ).fetchone() == (["erp_tx.paid_v3_to_v2", "erp_tx.paid_v2_to_v1"], None, [])

    emit(conn, {"money": {"cents": 5000, "currency": "EUR"}})
    emit(conn, {"money": {"cents": 500, "currency": "EUR"}})
    assert route(conn) == 2
    got = claim(conn)
    by_hook: dict[int, list[dict[str, Any]]] = {}
    for _id, hook, _b, _s, _k, payload in got:
        by_hook.setdefault(hook, []).append(json.loads(payload))
    assert [b["data"] for b in by_hook[big]] == [{"amount": 50}]  # 3 -> 2 -> 1, then the filter
    assert [b["version"] for b in by_hook[big]] == [1]
    assert [b["data"] for b in by_hook[v2]] == [
        {"amount_cents": 5000, "currency": "EUR"},
        {"amount_cents": 500, "currency": "EUR"},
    ]


def test_a_new_major_that_strands_pinned_webhooks_is_refused_with_their_list(
    shop: psycopg.Connection[Any],
) -> None:
    conn = shop
    c = make_consumer(conn)
    pinned = make_webhook(conn, c, URL, ["shop.*"], payload_version=1, name="legacy erp")
    make_webhook(conn, c, URL, [TYPE])  # unpinned: follows the new major
    other = make_webhook(conn, c, URL, ["user.*"], payload_version=1)  # another type
    gone = make_webhook(conn, c, URL, [TYPE], payload_version=1)
    conn.execute("SELECT whk.delete_webhook(%s)", [gone])
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        register(conn, V2, new_major=True)
    diag = err.value.diag
    assert f"{pinned} 'legacy erp' (pinned to v1)" in (diag.message_primary or "")
    assert str(other) not in (diag.message_primary or "").split(": ", 1)[1]
    assert f"{gone} " not in (diag.message_primary or "")
    assert diag.message_hint and "whk.register_event_transform('shop.order_paid', 2, 1" in diag.message_hint
    assert "force => true" in diag.message_hint
    current = conn.execute("SELECT current_major FROM whk.whk_02_eventos WHERE name = %s", [TYPE]).fetchone()
    assert current == (1,)
    # A transform that bridges them lifts the refusal.
    transform(conn, 2, 1, "erp_tx.paid_v2_to_v1")
    assert register(conn, V2, new_major=True) == "2.0"


def test_force_parks_pinned_deliveries_until_the_transform_is_registered(
    shop: psycopg.Connection[Any],
) -> None:
    conn = shop
    c = make_consumer(conn)
    v1 = make_webhook(conn, c, URL, [TYPE], payload_version=1)
    filtered = make_webhook(conn, c, URL, [TYPE], payload_version=1, filter="$.data.amount > 100")
    v2 = make_webhook(conn, c, URL, [TYPE], payload_version=2)
    assert register(conn, V2, new_major=True, force=True) == "2.0"
    emit(conn, {"amount_cents": 1250, "currency": "BRL"})
    route(conn)
    reason = (
        "no transform from shop.order_paid v2 to v1 (the webhook's pinned major): register one with "
        "SELECT whk.register_event_transform('shop.order_paid', 2, 1, '<schema>.<function>')"
    )
    assert parked(conn, v1) == [("parked", reason)]
    assert parked(conn, filtered) == [("parked", reason)]  # the filter cannot be read before rendering
    assert statuses(conn, v2) == {"pending": 1}
    assert set(bodies(conn)) == {v2}

    # Resuming the webhook or retrying the delivery does not send it in the wrong major.
    assert conn.execute("SELECT whk.resume_webhook(%s)", [v1]).fetchone() == (0,)
    ids = [r[0] for r in conn.execute("SELECT id FROM whk.whk_03_entregas WHERE webhook_id = %s", [v1])]
    assert conn.execute("SELECT whk.retry_deliveries(%s)", [ids]).fetchone() == (0,)
    assert parked(conn, v1) == [("parked", reason)]

    # Registering the transform renders them at once: released, or cancelled when the rendered body
    # does not match the filter (routing would never have created it).
    assert transform(conn, 2, 1, "erp_tx.paid_v2_to_v1") == 1
    assert parked(conn, v1) == [("pending", None)]
    assert parked(conn, filtered) == [
        ("cancelled", "rendered, it does not match the webhook's filter: not sent")
    ]
    assert {h: b["data"] for h, b in bodies(conn).items()} == {v1: {"amount": 12}}


def test_a_failing_transform_parks_only_its_own_delivery(shop: psycopg.Connection[Any]) -> None:
    conn = shop
    transform(conn, 2, 1, "erp_tx.paid_v2_to_v1")
    register(conn, V2, new_major=True)
    c = make_consumer(conn)
    v1 = make_webhook(conn, c, URL, [TYPE], payload_version=1)
    v2 = make_webhook(conn, c, URL, [TYPE], payload_version=2)
    emit(conn, {"amount_cents": -100, "currency": "BRL"})  # the transform divides by zero
    emit(conn, {"amount_cents": 700, "currency": "BRL"})
    assert route(conn) == 2  # the statement went on
    rows = parked(conn, v1)
    assert rows[1] == ("pending", None)
    status, problem = rows[0]
    assert status == "parked" and problem is not None
    assert problem.startswith("transform erp_tx.paid_v2_to_v1(jsonb) of shop.order_paid failed (22012)")
    assert "division by zero" in problem
    assert statuses(conn, v2) == {"pending": 2}
    quarantined = conn.execute("SELECT count(*) FROM whk.whk_01_webhooks WHERE quarantined_at IS NOT NULL")
    assert quarantined.fetchone() == (0,)

    # A transform dropped later parks with its own reason; fixing it and rendering again releases both.
    conn.execute("DROP FUNCTION erp_tx.paid_v2_to_v1(jsonb)")
    emit(conn, {"amount_cents": 900, "currency": "BRL"})
    route(conn)
    assert parked(conn, v1)[2] == (
        "parked",
        "transform erp_tx.paid_v2_to_v1(jsonb) of shop.order_paid failed (P0002):"
        " the function no longer exists",
    )
    conn.execute(
        "CREATE FUNCTION erp_tx.paid_v2_to_v1(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE"
        " RETURN jsonb_build_object('amount', (data ->> 'amount_cents')::int / 100)"
    )
    assert conn.execute("SELECT whk.render_parked_deliveries(%s)", [TYPE]).fetchone() == (2,)
    assert [s for s, _ in parked(conn, v1)] == ["pending", "pending", "pending"]


def test_a_delivery_of_a_disabled_webhook_stays_parked_for_its_resume(shop: psycopg.Connection[Any]) -> None:
    conn = shop
    c = make_consumer(conn)
    v1 = make_webhook(conn, c, URL, [TYPE], payload_version=1)
    register(conn, V2, new_major=True, force=True)
    emit(conn, {"amount_cents": 100, "currency": "BRL"})
    route(conn)
    conn.execute("SELECT whk.disable_webhook(%s, 'maintenance')", [v1])
    assert transform(conn, 2, 1, "erp_tx.paid_v2_to_v1") == 1
    assert parked(conn, v1) == [("parked", None)]  # now an ordinary parked delivery of a disabled webhook
    assert conn.execute("SELECT whk.resume_webhook(%s)", [v1]).fetchone() == (1,)
    assert [b["data"] for b in bodies(conn).values()] == [{"amount": 1}]


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        (("shop.nope", 2, 1, "erp_tx.paid_v2_to_v1"), "unknown event type", "whk_02_eventos"),
        ((TYPE, 3, 1, "erp_tx.paid_v2_to_v1"), "neither published nor the next one", "between 1 and 2"),
        ((TYPE, 0, 1, "erp_tx.paid_v2_to_v1"), "neither published nor the next one", "between 1 and 2"),
        ((TYPE, 1, 1, "erp_tx.paid_v2_to_v1"), "two different majors", "needs no transform"),
        ((TYPE, 2, 1, "erp_tx.missing"), "no function", "CREATE FUNCTION"),
        ((TYPE, 2, 1, "erp_tx.paid_v2_to_v1("), "no function", "CREATE FUNCTION"),
        ((TYPE, 2, 1, "erp_tx.two_args"), "is not (jsonb) RETURNS jsonb", "one argument"),
        ((TYPE, 2, 1, "erp_tx.returns_text"), "is not (jsonb) RETURNS jsonb", "one argument"),
        ((TYPE, 2, 1, "erp_tx.volatile"), "is VOLATILE", "IMMUTABLE"),
        ((TYPE, 2, 1, "erp_hidden.fn"), "whk_dispatcher may not call", "GRANT USAGE ON SCHEMA erp_hidden"),
    ],
)
def test_register_event_transform_refuses_bad_input_with_a_hint(
    shop: psycopg.Connection[Any], args: tuple[Any, ...], message: str, hint: str
) -> None:
    shop.execute(
        "CREATE FUNCTION erp_tx.two_args(a jsonb, b jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE RETURN a;"
        "CREATE FUNCTION erp_tx.returns_text(a jsonb) RETURNS text LANGUAGE sql IMMUTABLE RETURN a::text;"
        "CREATE FUNCTION erp_tx.volatile(a jsonb) RETURNS jsonb LANGUAGE sql RETURN a;"
        "CREATE SCHEMA erp_hidden;"
        "CREATE FUNCTION erp_hidden.fn(a jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE RETURN a;"
    )
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        shop.execute("SELECT whk.register_event_transform(%s, %s, %s, %s)", list(args))
    assert message in (err.value.diag.message_primary or "")
    assert hint in (err.value.diag.message_hint or "")
    assert shop.execute("SELECT count(*) FROM whk.whk_02_eventos_transforms").fetchone() == (0,)


def test_the_transform_table_refuses_what_is_not_a_qualified_name(shop: psycopg.Connection[Any]) -> None:
    etype = shop.execute("SELECT id FROM whk.whk_02_eventos WHERE name = %s", [TYPE]).fetchone()
    assert etype is not None
    for bad in ("erp_tx.f($1); SELECT 1", "f", "a.b.c"):
        with pytest.raises(psycopg.errors.CheckViolation), shop.transaction():
            shop.execute(
                "INSERT INTO whk.whk_02_eventos_transforms (event_type_id, from_major, to_major, function)"
                " VALUES (%s, 2, 1, %s)",
                [etype[0], bad],
            )
    with pytest.raises(psycopg.errors.CheckViolation):
        shop.execute(
            "INSERT INTO whk.whk_02_eventos_transforms (event_type_id, from_major, to_major, function)"
            " VALUES (%s, 1, 1, 'erp_tx.f')",
            [etype[0]],
        )


def test_unpinned_webhooks_never_call_the_renderer(shop: psycopg.Connection[Any]) -> None:
    conn = shop
    c = make_consumer(conn)
    make_webhook(conn, c, URL, [TYPE])
    make_webhook(conn, c, URL, ["*"], filter="$.data.amount > 1")
    pinned = make_webhook(conn, c, URL, [TYPE], payload_version=1)
    conn.execute("SET track_functions = 'pl'")
    with conn.transaction():
        for n in range(3):
            emit(conn, {"amount": n})
        route(conn)
        calls = conn.execute(
            "SELECT pg_stat_get_xact_function_calls("
            "'whk.render_event(jsonb, text, integer, integer)'::regprocedure)"
        ).fetchone()
    assert calls == (3,)  # once per event for the pinned webhook, never for the two others
    assert statuses(conn, pinned) == {"pending": 3}


def test_a_replay_renders_for_the_pinned_major_like_routing(shop: psycopg.Connection[Any]) -> None:
    conn = shop
    c = make_consumer(conn)
    register(conn, V2, new_major=True, force=True)
    emit(conn, {"amount_cents": 4200, "currency": "BRL"})
    route(conn)  # no webhook yet: the event is kept for replay
    v1 = make_webhook(conn, c, URL, [TYPE], payload_version=1)
    never = make_webhook(conn, c, URL, [TYPE], payload_version=1, filter="$.data.amount > 100")

    def replay(hook: int) -> None:
        row = conn.execute(
            "SELECT whk.replay_start(%s, now() - interval '1 day', now() + interval '1 minute', '{}', NULL,"
            " 'test')",
            [hook],
        ).fetchone()
        assert row is not None
        while conn.execute("SELECT whk.replay_step(%s, 10)", [row[0]]).fetchone() == (True,):
            pass

    replay(v1)  # no transform yet: replayed, parked with the reason (before: not replayed at all)
    assert [s for s, _ in parked(conn, v1)] == ["parked"]
    transform(conn, 2, 1, "erp_tx.paid_v2_to_v1")
    assert parked(conn, v1) == [("pending", None)]
    replay(never)  # rendered now, and the filter reads the v1 body: 42 is not > 100
    assert parked(conn, never) == []
    assert {h: b["data"] for h, b in bodies(conn).items()} == {v1: {"amount": 42}}


def test_registering_a_transform_in_sql_is_audited(shop: psycopg.Connection[Any]) -> None:
    conn = shop
    transform(conn, 2, 1, "erp_tx.paid_v2_to_v1")
    transform(conn, 2, 1, "erp_tx.paid_v3_to_v2")  # replaced: an update
    rows = conn.execute(
        "SELECT actor, action, target_type, target_id, before ->> 'function', after ->> 'function'"
        " FROM whk.audit_log WHERE target_type = 'event_transform' ORDER BY id"
    ).fetchall()
    etype = conn.execute("SELECT id::text FROM whk.whk_02_eventos WHERE name = %s", [TYPE]).fetchone()
    assert etype is not None
    assert [r[1:] for r in rows] == [
        ("event_transform.register", "event_transform", etype[0], None, "erp_tx.paid_v2_to_v1"),
        (
            "event_transform.update",
            "event_transform",
            etype[0],
            "erp_tx.paid_v2_to_v1",
            "erp_tx.paid_v3_to_v2",
        ),
    ]
    assert all(r[0].startswith("sql:") for r in rows)


def test_a_dba_bridges_and_publishes_a_major_in_psql(
    pg_server: PgServer, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    """The docs/capture.md walk-through, as a DBA types it."""
    c = make_consumer(conn)
    legacy = make_webhook(conn, c, URL, ["invoice.*"], payload_version=1, name="legacy erp")
    setup = """
        SELECT whk.register_event_type('invoice.paid', '{"type": "object", "required": ["amount"]}');
        CREATE SCHEMA erp;
        CREATE FUNCTION erp.paid_v2_to_v1(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
            RETURN jsonb_build_object('amount', (data ->> 'amount_cents')::int / 100);
        GRANT USAGE ON SCHEMA erp TO whk_dispatcher;
    """
    psql(pg_server, db_url, setup)
    v2 = """SELECT whk.register_event_type('invoice.paid', '{"type": "object", "required": ["amount_cents"]}',
                                          new_major => true);"""
    refused = psql(pg_server, db_url, v2, ok=False).stderr
    assert (
        "publishing invoice.paid version 2.0 would strand webhooks pinned to another major:"
        f" {legacy} 'legacy erp' (pinned to v1)" in refused
    )
    assert "HINT:  register a transform first" in refused
    out = psql(
        pg_server,
        db_url,
        "SELECT whk.register_event_transform('invoice.paid', 2, 1, 'erp.paid_v2_to_v1');" + v2,
    ).stdout.split()
    assert out == ["0", "2.0"]
    psql(pg_server, db_url, """SELECT whk.emit('invoice.paid', '{"amount_cents": 1200}');""")
    route(conn)
    [(_id, hook, _b, _s, _k, payload)] = claim(conn)
    assert hook == legacy
    assert json.loads(payload)["data"] == {"amount": 12}
