"""The compiled fast check of event schemas (whk.jsonschema_predicate / whk.jsonschema_jsonpath).

whk.validate_payload answers "valid" from ``data @@ check_path`` and asks the PL/pgSQL reference validator
(whk.jsonschema_error) otherwise. The fast check must therefore never say TRUE for an invalid value
(soundness), and should say TRUE for every valid one (or the fast path is never taken). Both are checked
here against the reference: on the seeded catalog, on hand-picked lax-mode traps, and on random schemas
and values (hypothesis).
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from tests.db.test_capture_registry import DIFFERENTIAL, register
from tests.support.delivery import emit, make_consumer, make_webhook, route

pytestmark = pytest.mark.db


def compile_schema(conn: psycopg.Connection[Any], schema: Any) -> str | None:
    row = conn.execute("SELECT whk.jsonschema_jsonpath(%s)::text", (Jsonb(schema),)).fetchone()
    assert row is not None
    return None if row[0] is None else str(row[0])


def verdicts(
    conn: psycopg.Connection[Any], schema: Any, instances: list[Any]
) -> list[tuple[bool | None, bool]]:
    """(fast check, reference says valid) for each instance, in one round trip."""
    rows = conn.execute(
        "SELECT i.value @@ whk.jsonschema_jsonpath(%(s)s), whk.jsonschema_error(%(s)s, i.value) IS NULL"
        " FROM jsonb_array_elements(%(i)s) WITH ORDINALITY AS i ORDER BY i.ordinality",
        {"s": Jsonb(schema), "i": Jsonb(instances)},
    ).fetchall()
    return [(fast, ref) for fast, ref in rows]


def assert_exact(conn: psycopg.Connection[Any], schema: Any, instances: list[Any]) -> None:
    for instance, (fast, ref) in zip(instances, verdicts(conn, schema, instances), strict=True):
        assert fast is not None, ("fast check unknown", schema, instance)
        assert fast == ref, (schema, instance, {"fast": fast, "reference": ref})


def test_every_seeded_schema_version_has_a_fast_check(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "SELECT e.name, v.check_path IS NOT NULL,"
        " v.check_path::text = whk.jsonschema_jsonpath(v.schema)::text"
        " FROM whk.whk_02_eventos_versoes v JOIN whk.whk_02_eventos e ON e.id = v.event_type_id"
    ).fetchall()
    assert len(rows) == 18
    assert all(compiled and current for _, compiled, current in rows), rows


def test_demo_erp_events_take_the_fast_path(conn: psycopg.Connection[Any]) -> None:
    """A valid order.created envelope is accepted by the fast check itself, an invalid one is not, and
    validate_payload still names the error through the reference."""
    good = {"op": "INSERT", "table": "erp.orders", "new": {"id": 7, "status": "new", "total": 10.5},
            "old": None, "changed": None}  # fmt: skip
    bad = {**good, "new": {"id": 1.5, "status": "new"}}
    row = conn.execute(
        "SELECT %(g)s::jsonb @@ v.check_path, %(b)s::jsonb @@ v.check_path,"
        " whk.validate_payload('order.created', 1, jsonb_build_object('type', 'order.created',"
        "   'timestamp', '2026-01-01T00:00:00Z', 'data', %(g)s::jsonb)),"
        " whk.validate_payload('order.created', 1, jsonb_build_object('type', 'order.created',"
        "   'timestamp', '2026-01-01T00:00:00Z', 'data', %(b)s::jsonb))"
        " FROM whk.whk_02_eventos_versoes v JOIN whk.whk_02_eventos e ON e.id = v.event_type_id"
        " WHERE e.name = 'order.created'",
        {"g": Jsonb(good), "b": Jsonb(bad)},
    ).fetchone()
    assert row == (True, False, None, "/data/new/id: expected integer or string, got number")


def test_registering_a_version_compiles_it_and_untranslatable_schemas_use_the_reference(
    conn: psycopg.Connection[Any],
) -> None:
    paid = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}
    sent = {"type": "object", "properties": {"ref": {"type": "string", "pattern": "^I-"}}}
    register(conn, "invoice.paid", paid)
    register(conn, "invoice.sent", sent)
    rows = dict(
        conn.execute(
            "SELECT e.name, v.check_path IS NOT NULL FROM whk.whk_02_eventos_versoes v"
            " JOIN whk.whk_02_eventos e ON e.id = v.event_type_id WHERE e.name LIKE 'invoice.%'"
        ).fetchall()
    )
    assert rows == {"invoice.paid": True, "invoice.sent": False}
    errors = conn.execute(
        "SELECT whk.validate_payload(t, NULL, jsonb_build_object('type', t, 'timestamp', 'x', 'data', d))"
        " FROM (VALUES ('invoice.paid', '{\"n\": 0}'::jsonb), ('invoice.paid', '{\"n\": 2}'),"
        "              ('invoice.sent', '{\"ref\": \"X-1\"}'),"
        "              ('invoice.sent', '{\"ref\": \"I-1\"}')) AS v(t, d)"
    ).fetchall()
    assert [e for (e,) in errors] == [
        "/data/n: 0 is less than the minimum 1",
        None,
        "/data/ref: does not match the pattern ^I-",
        None,
    ]


@pytest.mark.parametrize(
    "schema",
    [
        {"minLength": 1},
        {"maxLength": 1},
        {"pattern": "a"},
        {"minProperties": 1},
        {"maxProperties": 1},
        {"uniqueItems": True},
        {"oneOf": [{"type": "string"}]},
        {"prefixItems": [{"type": "string"}]},
        {"$ref": "#"},
        {"additionalProperties": {"type": "string"}},
        {"const": {"a": 1}},
        {"enum": [1, [2]]},
        {"properties": {"a": {"items": {"pattern": "x"}}}},
    ],
)
def test_assertions_without_an_exact_jsonpath_form_are_not_compiled(
    conn: psycopg.Connection[Any], schema: Any
) -> None:
    assert compile_schema(conn, schema) is None


# Where lax-mode jsonpath would go wrong if rules were not guarded by type: arrays are unwrapped by member
# access and comparisons, and an unknown predicate inside a filter drops the item.
LAX_TRAPS: list[tuple[Any, list[Any]]] = [
    ({"properties": {"a": {"type": "string"}}}, [{"a": "x"}, {"a": 1}, [{"a": 1}], [{"a": "x"}], {"b": 1}]),
    ({"const": "x"}, ["x", ["x"], ["x", "y"], "y", None]),
    ({"enum": [1, "a"]}, [1, 1.0, [1], ["a"], "a", 2]),
    ({"required": ["a"]}, [{"a": None}, {}, [{"a": 1}], "a"]),
    ({"minimum": 2}, [2, 1, [1], [3], "1", None]),
    ({"items": {"type": "integer"}}, [[1, 2], [1, "2"], [], {"a": "x"}, [[1]], "s"]),
    ({"items": {"minimum": 0}}, [[0, 1], [-1], ["a", 2], [[-5]]]),
    ({"items": {"properties": {"a": {"const": 1}}}}, [[{"a": 1}], [{"a": 2}], [[{"a": 2}]], [1, {"a": 1}]]),
    ({"items": {"items": {"type": "null"}}}, [[[None]], [[1]], [None], [[None], [None, 0]]]),
    ({"additionalProperties": False, "properties": {"a": {}}}, [{"a": 1}, {"a": 1, "b": 2}, {}, [{"b": 1}]]),
    ({"additionalProperties": False}, [{}, {"x": 1}, [], "s"]),
    ({"minItems": 2, "maxItems": 2}, [[1, 2], [1], [1, 2, 3], {"a": 1, "b": 2}, "ab"]),
    ({"type": "integer"}, [1, 1.0, 1.5, "1", [1], True, None]),
    ({"type": ["integer", "null"]}, [None, 2, 2.5, [None]]),
    ({"multipleOf": 0.5}, [1.5, 1.2, [1.2], "x"]),
    ({"not": {"type": "string"}}, ["s", 1, ["s"]]),
    ({"if": {"type": "string"}, "then": {"const": "a"}, "else": {"type": "integer"}}, ["a", "b", 1, 1.5]),
    ({"if": {"minimum": 5}}, [1, 10, "x"]),
    ({"anyOf": []}, [1, None]),
    ({"allOf": []}, [1, None]),
    ({"enum": []}, [1]),
    ({"type": "nonsense"}, [1, "nonsense"]),
    (
        {"properties": {'we"ird\\key': {"type": "string"}, "": {"type": "null"}}},
        [{'we"ird\\key': "x"}, {'we"ird\\key': 1}, {"": None}, {"": 0}],
    ),
    ({"const": 'quote " and \\ and \n'}, ['quote " and \\ and \n', "quote"]),
    (False, [1, None]),
    (True, [1, None]),
]


UNTRANSLATED = {"$ref", "minLength", "maxLength", "pattern", "minProperties", "maxProperties", "uniqueItems",
                "oneOf", "prefixItems"}  # fmt: skip


def untranslatable(schema: Any) -> bool:
    """What whk.jsonschema_predicate leaves to the reference, computed independently of it."""
    if isinstance(schema, list):
        return any(untranslatable(s) for s in schema)
    if not isinstance(schema, dict):
        return False
    if UNTRANSLATED & schema.keys() or schema.get("additionalProperties", True) not in (True, False):
        return True
    for key in ("const", "enum"):
        values = (
            [schema[key]]
            if key == "const" and key in schema
            else schema.get(key, [])
            if key == "enum"
            else []
        )
        if any(isinstance(v, dict | list) for v in values):
            return True
    subschemas = [*schema.get("properties", {}).values(), *schema.get("allOf", []), *schema.get("anyOf", [])]
    subschemas += [schema[k] for k in ("items", "not", "if", "then", "else") if k in schema]
    return any(untranslatable(s) for s in subschemas)


@pytest.mark.parametrize(("schema", "instances"), LAX_TRAPS + [(s, i) for s, i in DIFFERENTIAL])
def test_the_fast_check_agrees_with_the_reference(
    conn: psycopg.Connection[Any], schema: Any, instances: list[Any]
) -> None:
    compiled = compile_schema(conn, schema)
    assert (compiled is None) == untranslatable(schema), (schema, compiled)
    if compiled is not None:
        assert_exact(conn, schema, instances)


# Random schemas of the translated subset, and random values that often hit them.
KEYS = st.sampled_from(["a", "b", "c"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.5, 1.0, 2.5, -1.5]),
    st.sampled_from(["", "a", "b", "x y"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=8,
)
TYPES = st.sampled_from(["object", "array", "string", "number", "integer", "boolean", "null"])
NUMBERS = st.sampled_from([-2, 0, 1, 1.5, 3])


def _fragments(sub: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.builds(lambda t: {"type": t}, st.one_of(TYPES, st.lists(TYPES, min_size=1, max_size=3))),
        st.builds(lambda v: {"const": v}, SCALARS),
        st.builds(lambda v: {"enum": v}, st.lists(SCALARS, max_size=3)),
        st.builds(
            lambda k, n: {k: n},
            st.sampled_from(["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]),
            NUMBERS,
        ),
        st.builds(lambda n: {"multipleOf": n}, st.sampled_from([0.5, 1, 2])),
        st.builds(lambda ks: {"required": ks}, st.lists(KEYS, max_size=2, unique=True)),
        st.builds(lambda p: {"properties": p}, st.dictionaries(KEYS, sub, max_size=2)),
        st.builds(
            lambda p: {"properties": p, "additionalProperties": False}, st.dictionaries(KEYS, sub, max_size=2)
        ),
        st.builds(lambda n: {"minItems": n}, st.integers(0, 2)),
        st.builds(lambda n: {"maxItems": n}, st.integers(0, 2)),
        st.builds(lambda s: {"items": s}, sub),
        st.builds(lambda ss: {"allOf": ss}, st.lists(sub, max_size=2)),
        st.builds(lambda ss: {"anyOf": ss}, st.lists(sub, max_size=2)),
        st.builds(lambda s: {"not": s}, sub),
        st.builds(lambda i, t, e: {"if": i, "then": t, "else": e}, sub, sub, sub),
    )


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    schema: dict[str, Any] = {}
    for part in parts:
        schema.update(part)
    return schema


SCHEMAS = st.recursive(
    st.one_of(st.just({}), st.booleans()),
    lambda sub: st.lists(_fragments(sub), min_size=1, max_size=3).map(_merge),
    max_leaves=6,
)


@pytest.mark.slow  # 250 random schemas, each checked both ways in SQL
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=SCHEMAS, instances=st.lists(VALUES, min_size=1, max_size=12))
def test_random_schemas_and_values_agree_with_the_reference(
    conn: psycopg.Connection[Any], schema: Any, instances: list[Any]
) -> None:
    assert compile_schema(conn, schema) is not None, schema
    assert_exact(conn, schema, instances)


def _route_and_flags(conn: psycopg.Connection[Any]) -> list[tuple[bool | None, str | None]]:
    route(conn)
    rows = conn.execute("SELECT valid, validation_error FROM whk.outbox ORDER BY id").fetchall()
    conn.execute("DELETE FROM whk.outbox")
    return [(valid, error) for valid, error in rows]


@pytest.mark.parametrize("check_path", ["strict (1 == 2)", None])
def test_routing_flags_come_from_the_reference_whenever_the_compiled_check_does_not_accept(
    conn: psycopg.Connection[Any], check_path: str | None
) -> None:
    """The compiled check can only accept: one that rejects everything, or none at all, leaves every
    verdict to whk.validate_payload, so the flags stay the same."""
    make_webhook(conn, make_consumer(conn), "http://127.0.0.1:9/", ["user.*"])
    good = {"user_id": 1, "session_id": 2, "at": "2026-01-01T00:00:00Z"}
    emit(conn, "user.logout", good)
    emit(conn, "user.logout", {"user_id": 1})
    before = _route_and_flags(conn)
    assert before[0] == (True, None)
    assert before[1][0] is False and "required property" in str(before[1][1])

    conn.execute("ALTER TABLE whk.whk_02_eventos_versoes DISABLE TRIGGER whk_02_eventos_versoes_check_path")
    conn.execute(
        "UPDATE whk.whk_02_eventos_versoes v SET check_path = %s::jsonpath FROM whk.whk_02_eventos e"
        " WHERE e.id = v.event_type_id AND e.name = 'user.logout'",
        (check_path,),
    )
    conn.execute("ALTER TABLE whk.whk_02_eventos_versoes ENABLE TRIGGER whk_02_eventos_versoes_check_path")
    emit(conn, "user.logout", good)
    emit(conn, "user.logout", {"user_id": 1})
    assert _route_and_flags(conn) == before


def test_routing_accepts_through_the_compiled_check_without_the_reference(
    conn: psycopg.Connection[Any],
) -> None:
    """Shows the fast path is the one taken: with a check that accepts everything, routing flags even an
    invalid payload valid (the reference, which would reject it, is not asked)."""
    make_webhook(conn, make_consumer(conn), "http://127.0.0.1:9/", ["user.*"])
    conn.execute("ALTER TABLE whk.whk_02_eventos_versoes DISABLE TRIGGER whk_02_eventos_versoes_check_path")
    conn.execute(
        "UPDATE whk.whk_02_eventos_versoes v SET check_path = 'strict (1 == 1)' FROM whk.whk_02_eventos e"
        " WHERE e.id = v.event_type_id AND e.name = 'user.logout'"
    )
    emit(conn, "user.logout", {"user_id": 1})
    assert _route_and_flags(conn) == [(True, None)]
