"""Event catalog: the 18 seed types, schema versioning with a compatibility check, strict validation."""

from __future__ import annotations

import json
from typing import Any

import jsonschema_rs
import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.db.capture_support import outbox, run_and_roll_back

pytestmark = pytest.mark.db

SEED_TYPES = {
    "system.startup", "system.shutdown", "system.health_check", "system.backup_completed",
    "user.created", "user.updated", "user.deleted", "user.login", "user.logout",
    "order.created", "order.updated", "order.cancelled", "order.completed", "order.shipped",
    "product.created", "product.updated", "product.deleted", "product.out_of_stock",
}  # fmt: skip

INVOICE_V1 = {
    "type": "object",
    "required": ["invoice_id", "amount"],
    "properties": {
        "invoice_id": {"type": "integer"},
        "amount": {"type": "number", "minimum": 0},
        "status": {"enum": ["open", "paid"]},
    },
}


def register(conn: psycopg.Connection[Any], name: str, schema: Any, **kw: Any) -> str:
    args = ", ".join(f"{k} => %({k})s" for k in kw)
    row = conn.execute(
        f"SELECT whk.register_event_type(%(name)s, %(schema)s{', ' + args if args else ''})",
        {"name": name, "schema": Jsonb(schema), **kw},
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_the_catalog_is_seeded_with_the_18_spec_types_at_version_1(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "SELECT e.name, e.description, e.current_major, e.current_minor, e.strict, v.schema"
        " FROM whk.whk_02_eventos e JOIN whk.whk_02_eventos_versoes v ON v.event_type_id = e.id"
    ).fetchall()
    assert {r[0] for r in rows} == SEED_TYPES
    assert len(rows) == 18
    for name, description, major, minor, strict, schema in rows:
        assert description, name
        assert (major, minor, strict) == (1, 0, False), name
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema", name
        assert jsonschema_rs.meta.is_valid(schema), name  # a real draft 2020-12 schema
        problem = conn.execute("SELECT whk.jsonschema_problem(%s)", (Jsonb(schema),)).fetchone()
        assert problem == (None,), name  # and fully enforceable by the SQL validator


def test_a_compatible_change_bumps_the_minor_and_identical_changes_nothing(
    conn: psycopg.Connection[Any],
) -> None:
    assert register(conn, "billing.invoice_paid", INVOICE_V1, description="An invoice was paid.") == "1.0"
    assert register(conn, "billing.invoice_paid", INVOICE_V1) == "1.0"  # idempotent
    additive = json.loads(json.dumps(INVOICE_V1))
    additive["properties"]["currency"] = {"type": "string"}  # new optional property
    additive["properties"]["status"]["enum"].append("refunded")  # new enum value
    additive["properties"]["amount"]["description"] = "gross, in cents"  # annotation only
    assert register(conn, "billing.invoice_paid", additive) == "1.1"
    versions = conn.execute(
        "SELECT v.major, v.minor, v.changelog FROM whk.whk_02_eventos_versoes v"
        " JOIN whk.whk_02_eventos e ON e.id = v.event_type_id"
        " WHERE e.name = 'billing.invoice_paid' ORDER BY 1, 2"
    ).fetchall()
    assert versions == [(1, 0, "initial version"), (1, 1, "backward compatible change")]
    current = conn.execute(
        "SELECT current_major, current_minor, description, category FROM whk.whk_02_eventos"
        " WHERE name = 'billing.invoice_paid'"
    ).fetchone()
    assert current == (1, 1, "An invoice was paid.", "billing")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda s: s["properties"].pop("status"), "/properties/status: property removed"),
        (lambda s: s["required"].append("status"), '"status" became required'),
        (lambda s: s["required"].remove("amount"), '"amount" is no longer required'),
        (
            lambda s: s["properties"]["invoice_id"].update(type="string"),
            "/properties/invoice_id/type: changed",
        ),
        (
            lambda s: s["properties"]["status"].update(enum=["open"]),
            '/properties/status/enum: "paid" removed',
        ),
        (lambda s: s["properties"]["amount"].update(minimum=10), "/properties/amount/minimum: tightened"),
        (lambda s: s.update(additionalProperties=False), "/additionalProperties: became false"),
        (lambda s: s["properties"]["invoice_id"].update(pattern="^[0-9]+$"), "pattern: added"),
    ],
)
def test_a_breaking_change_in_the_same_major_is_refused_with_a_hint(
    conn: psycopg.Connection[Any], change: Any, reason: str
) -> None:
    register(conn, "billing.invoice_paid", INVOICE_V1)
    breaking = json.loads(json.dumps(INVOICE_V1))
    change(breaking)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        register(conn, "billing.invoice_paid", breaking)
    diag = err.value.diag
    assert diag.message_primary is not None
    assert "breaking schema change for billing.invoice_paid in major version 1" in diag.message_primary
    assert reason in diag.message_primary
    assert diag.message_hint is not None and "new_major => true" in diag.message_hint
    # ... and accepted as a new major version.
    assert register(conn, "billing.invoice_paid", breaking, new_major=True) == "2.0"
    assert conn.execute(
        "SELECT current_major FROM whk.whk_02_eventos WHERE name = 'billing.invoice_paid'"
    ).fetchone() == (2,)


def test_emit_uses_the_current_major_and_old_majors_stay_validatable(conn: psycopg.Connection[Any]) -> None:
    register(conn, "billing.invoice_paid", INVOICE_V1)
    conn.execute("SELECT whk.emit('billing.invoice_paid', '{\"invoice_id\": 1, \"amount\": 5}', 'inv-1')")
    v2 = {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}
    register(conn, "billing.invoice_paid", v2, new_major=True)
    conn.execute("SELECT whk.emit('billing.invoice_paid', '{\"id\": \"INV-2\"}')")
    rows = conn.execute(
        "SELECT event_version, whk.validate_payload(event_type, event_version, payload),"
        " whk.validate_payload(event_type, NULL, payload) FROM whk.outbox_events ORDER BY id"
    ).fetchall()
    assert rows == [(1, None, '/data: required property "id" is missing'), (2, None, None)]


def test_captured_types_follow_a_new_major(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE public.t (id int PRIMARY KEY, v int)")
    conn.execute("SELECT whk.enable_capture('public.t', 'thing')")
    triggers = "SELECT array_agg(oid ORDER BY tgname) FROM pg_trigger WHERE tgrelid = 'public.t'::regclass"
    before = conn.execute(triggers).fetchone()
    conn.execute("INSERT INTO public.t VALUES (1, 1)")
    register(conn, "thing.created", {"type": "object"}, new_major=True)
    conn.execute("INSERT INTO public.t VALUES (2, 1)")
    versions = [e["event_version"] for e in outbox(conn)]
    assert versions == [1, 2]
    # Only the function was regenerated: the ERP table's triggers were not touched (no DDL on it).
    assert conn.execute(triggers).fetchone() == before


def test_strict_types_reject_invalid_payloads_at_emit_with_a_hint(conn: psycopg.Connection[Any]) -> None:
    register(conn, "billing.invoice_paid", INVOICE_V1, strict=True)
    with pytest.raises(psycopg.errors.CheckViolation) as err:
        conn.execute('SELECT whk.emit(\'billing.invoice_paid\', \'{"invoice_id": "7", "amount": 5}\')')
    diag = err.value.diag
    assert diag.message_primary is not None
    assert "invalid payload for strict event type billing.invoice_paid (version 1.0)" in diag.message_primary
    assert diag.message_detail == "/data/invoice_id: expected integer, got string"
    assert diag.message_hint is not None and "whk.register_event_type" in diag.message_hint
    assert outbox(conn) == []
    conn.execute("SELECT whk.emit('billing.invoice_paid', '{\"invoice_id\": 7, \"amount\": 5}')")
    [event] = outbox(conn)
    assert event["payload"]["data"] == {"invoice_id": 7, "amount": 5}
    assert conn.execute("SELECT valid FROM whk.outbox").fetchone() == (True,)


def test_non_strict_types_are_written_and_flagged_downstream(conn: psycopg.Connection[Any]) -> None:
    register(conn, "billing.invoice_paid", INVOICE_V1)
    conn.execute("SELECT whk.emit('billing.invoice_paid', '{\"amount\": -1}')")
    [(valid, error)] = conn.execute(
        "SELECT valid, whk.validate_payload(event_type, event_version, payload) FROM whk.outbox_events"
    ).fetchall()
    assert valid is None  # not validated in the ERP's transaction
    assert error == '/data: required property "invoice_id" is missing'


def test_emit_details(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.UndefinedObject, match=r"unknown event type 'nope\.nothing'") as err:
        conn.execute("SELECT whk.emit('nope.nothing', '{}')")
    assert err.value.diag.message_hint is not None and "register_event_type" in err.value.diag.message_hint
    register(conn, "billing.reminder_due", {"type": "object"})
    event_id = conn.execute(
        "SELECT whk.emit('billing.reminder_due', '{\"n\": 1}', 'cust-9', now() + interval '1 day')"
    ).fetchone()
    [event] = outbox(conn)
    assert event_id == (event["event_id"],)
    assert event["event_key"] == "cust-9"
    assert event["operation"] == "EMIT" and event["source_table"] is None
    assert event["deliver_at"] is not None
    assert event["payload"]["type"] == "billing.reminder_due" and event["payload"]["data"] == {"n": 1}
    run_and_roll_back(conn, "SELECT whk.emit('billing.reminder_due', '{}')")
    assert len(outbox(conn)) == 1


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "strin"}, "/type: must be one of"),
        ({"properties": {"a": {"minimum": "1"}}}, "/properties/a/minimum: must be a number"),
        ({"patternProperties": {"^x": {}}}, "/patternProperties: keyword not supported"),
        ({"$ref": "https://example.com/s.json"}, "only local references"),
        ({"$ref": "#/$defs/missing"}, "does not resolve"),
        ({"pattern": "("}, "not a valid regular expression"),
        ([1], "a schema is a JSON object or a boolean"),
    ],
)
def test_unusable_schemas_are_refused_at_registration(
    conn: psycopg.Connection[Any], schema: Any, problem: str
) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="is not usable") as err:
        register(conn, "billing.thing_done", schema)
    assert problem in str(err.value)


def test_bad_event_type_names_are_refused(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="invalid event type name"):
        register(conn, "NoDots", {})


# The SQL validator against jsonschema-rs (a complete draft 2020-12 implementation) on the same cases.
DIFFERENTIAL: list[tuple[Any, list[Any]]] = [
    ({"type": "integer"}, [1, 1.0, 1.5, "1", None, True]),
    ({"type": ["string", "null"], "minLength": 2, "maxLength": 3}, ["ab", "a", "abcd", None, 3, "ção"]),
    ({"enum": [1, "a", None, {"k": [1]}]}, [1, 1.0, "a", None, {"k": [1]}, {"k": [2]}, "b"]),
    ({"const": {"a": 1}}, [{"a": 1}, {"a": 1.0}, {"a": 2}, {}]),
    ({"type": "number", "minimum": 0, "exclusiveMaximum": 10, "multipleOf": 0.5}, [0, 9.5, 10, -0.5, 0.3]),
    (
        {
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}},
            "additionalProperties": False,
        },
        [{"id": 1}, {"id": 1, "tags": ["a"]}, {"id": 1, "tags": [1]}, {"tags": []}, {"id": 1, "x": 0}, []],
    ),
    ({"additionalProperties": {"type": "boolean"}, "minProperties": 1, "maxProperties": 2},
     [{"a": True}, {}, {"a": 1}, {"a": True, "b": False, "c": True}]),
    ({"type": "array", "prefixItems": [{"type": "string"}], "items": {"type": "integer"}, "minItems": 1,
      "uniqueItems": True}, [["a", 1, 2], ["a", 1, 1], [1], [], ["a", "b"]]),
    ({"anyOf": [{"type": "string"}, {"minimum": 5}]}, ["x", 6, 4, None]),
    ({"oneOf": [{"type": "integer"}, {"minimum": 5}]}, [1, 6, 5.5, "x"]),
    ({"allOf": [{"required": ["a"]}, {"required": ["b"]}]}, [{"a": 1, "b": 2}, {"a": 1}]),
    ({"not": {"type": "null"}}, [None, 0]),
    ({"if": {"properties": {"k": {"const": "card"}}},
      "then": {"required": ["last4"]}, "else": {"required": ["iban"]}},
     [{"k": "card", "last4": "1"}, {"k": "card"}, {"k": "sepa", "iban": "x"}, {"k": "sepa"}]),
    ({"$defs": {"money": {"type": "number", "minimum": 0}},
      "properties": {"total": {"$ref": "#/$defs/money"}}},
     [{"total": 3}, {"total": -3}, {"total": "3"}]),
    ({"type": "string", "pattern": "^[A-Z]{2}-\\d+$"}, ["BR-12", "br-12", "BR-", "XBR-1"]),
    (True, [1, None]),
    (False, [1]),
]  # fmt: skip


@pytest.mark.parametrize(("schema", "instances"), DIFFERENTIAL)
def test_the_sql_validator_agrees_with_jsonschema_rs(
    conn: psycopg.Connection[Any], schema: Any, instances: list[Any]
) -> None:
    reference = jsonschema_rs.Draft202012Validator(schema)
    assert conn.execute("SELECT whk.jsonschema_problem(%s)", (Jsonb(schema),)).fetchone() == (None,)
    for instance in instances:
        error = conn.execute(
            "SELECT whk.jsonschema_error(%s, %s)", (Jsonb(schema), Jsonb(instance))
        ).fetchone()
        assert error is not None
        assert (error[0] is None) == reference.is_valid(instance), (schema, instance, error[0])
