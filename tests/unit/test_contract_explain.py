"""api.contract.explain: a value valid under no branch of an anyOf/oneOf is explained by the branch it was
meant for, in bodies and in query parameters; hostile_body_problems: depth and UTF-8 before decoding."""

from __future__ import annotations

from typing import Any

import jsonschema_rs

from api.contract import MAX_JSON_DEPTH, QueryContract, explain, hostile_body_problems, query_contracts

POLICY = {
    "type": "object",
    "properties": {"schedule_s": {"type": "array", "items": {"type": "number", "minimum": 0.001}}},
    "required": ["schedule_s"],
    "additionalProperties": False,
}
BODY = {
    "type": "object",
    "properties": {
        "retry_policy": {"anyOf": [{"$ref": "#/$defs/Policy"}, {"type": "null"}]},
        "channel": {
            "oneOf": [
                {"type": "object", "properties": {"type": {"const": "email"}, "target": {"pattern": "@"}}},
                {
                    "type": "object",
                    "properties": {"type": {"const": "slack"}, "target": {"pattern": "^https"}},
                },
            ]
        },
    },
    "$defs": {"Policy": POLICY},
}


def _explained(instance: dict[str, Any]) -> list[dict[str, str]]:
    validator = jsonschema_rs.Draft202012Validator(BODY)
    return [e for error in validator.iter_errors(instance) for e in explain(error)]


def test_the_branch_meant_speaks():
    assert _explained({"retry_policy": {"schedule": [1]}}) == [
        {"pointer": "/retry_policy/schedule", "message": "Object contains unknown field `schedule`"},
        {"pointer": "/retry_policy/schedule_s", "message": "Object missing required field `schedule_s`"},
    ]
    assert _explained({"retry_policy": {"schedule_s": [1, 0]}}) == [
        {"pointer": "/retry_policy/schedule_s/1", "message": "0 is less than the minimum of 0.001"}
    ]
    assert _explained({"retry_policy": 5}) == [
        {"pointer": "/retry_policy", "message": "expected null or object"}
    ]
    # a tagged variant: the branch whose tag the value carries
    (only,) = _explained({"channel": {"type": "email", "target": "nobody"}})
    assert only["pointer"] == "/channel/target" and "does not match" in only["message"]


def test_query_parameters_are_explained_too():
    doc = {
        "paths": {
            "/x": {
                "get": {
                    "parameters": [
                        {
                            "in": "query",
                            "name": "c",
                            "schema": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]},
                        }
                    ]
                }
            }
        }
    }
    contract: QueryContract = query_contracts(doc)[("/x", "GET")]
    assert contract.problems({"c": ["0"]}) == [
        {"pointer": "/query/c", "message": "0 is less than the minimum of 1"}
    ]
    assert contract.problems({"c": ["abc"]}) == [
        {"pointer": "/query/c", "message": "expected integer or null"}
    ]


def test_hostile_bodies_are_found_before_decoding():
    deep = b'{"m": ' + b'{"a":' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 2)
    assert hostile_body_problems(deep)[0]["pointer"] == "/m"
    at_the_limit = b'{"m": ' + b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH + b"}"
    assert hostile_body_problems(at_the_limit) == []
    # brackets and escaped quotes inside strings are text
    text = b'{"k\\"": "\\\\", "s": "\\"' + b"[" * 200 + b'"}'
    assert hostile_body_problems(text) == []
    assert hostile_body_problems(b'{"s": "\xff"}') == [
        {"pointer": "", "message": "the body is not valid UTF-8 (byte 7)"}
    ]
