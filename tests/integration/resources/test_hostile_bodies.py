"""Hostile bodies answer 400 problem+json naming where the problem is, never 500 (issue 15 §3): JSON nested
deeper than the documented limit (64 levels for any free-form value), invalid UTF-8; and a value that fits no
branch of an anyOf/oneOf is explained by the branch it was meant for (§5)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from api.contract import MAX_JSON_DEPTH
from tests.support.resources import World

pytestmark = pytest.mark.db

HOOK = {"name": "deep", "url": "http://127.0.0.1:9/h", "event_types": ["order.*"]}


def _nested(levels: int, *, array: bool = False) -> bytes:
    """A JSON value nested ``levels`` arrays/objects deep."""
    if array:
        return b"[" * levels + b"1" + b"]" * levels
    return b'{"a":' * levels + b"1" + b"}" * levels


def _with(member: str, value: bytes, **fields: Any) -> bytes:
    head = b", ".join(f'"{k}": '.encode() + _json(v) for k, v in fields.items())
    return b"{" + head + (b", " if head else b"") + f'"{member}": '.encode() + value + b"}"


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value).encode()


def _problem(r: Any, status: int = 400) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    return body


async def _post(client: AsyncTestClient[Any], path: str, body: bytes, headers: dict[str, str]) -> Any:
    return await client.post(path, content=body, headers={**headers, "content-type": "application/json"})


@pytest.mark.parametrize("who", ["admin", "consumer"])
async def test_metadata_nested_100000_levels_is_a_400_naming_metadata(
    client: AsyncTestClient[Any], world: World, who: str
):
    headers = world.admin if who == "admin" else world.a.headers
    fields = {**HOOK, "consumer_id": world.a.consumer_id} if who == "admin" else HOOK
    r = await _post(client, "/api/whk/webhooks", _with("metadata", _nested(100_000), **fields), headers)
    problem = _problem(r)
    assert problem["errors"][0]["pointer"] == "/metadata"
    assert f"deeper than {MAX_JSON_DEPTH} levels" in problem["errors"][0]["message"]


async def test_event_data_nested_5000_levels_is_a_400_naming_data(client: AsyncTestClient[Any], world: World):
    for nested in (_nested(5000), _nested(5000, array=True)):
        body = _with("data", nested, type="order.created")
        problem = _problem(await _post(client, "/api/whk/events/trigger", body, world.admin))
        assert problem["errors"][0]["pointer"] == "/data"


async def test_invalid_utf8_is_a_400(client: AsyncTestClient[Any], world: World):
    body = b'{"name": "caf\xe9", "url": "http://127.0.0.1:9/h", "event_types": ["order.*"]}'
    problem = _problem(await _post(client, "/api/whk/webhooks", body, world.a.headers))
    assert problem["errors"] == [{"pointer": "", "message": "the body is not valid UTF-8 (byte 13)"}]
    # the same in a free-form member, and on another route
    body = _with("data", b'{"x": "\xff\xfe"}', type="order.created")
    _problem(await _post(client, "/api/whk/events/trigger", body, world.admin))


async def test_the_limit_is_exactly_64_levels(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    r = await _post(
        client, "/api/whk/webhooks", _with("metadata", _nested(MAX_JSON_DEPTH), **HOOK), world.a.headers
    )
    assert r.status_code == 201, r.text
    depth = conn.execute(
        "SELECT jsonb_path_query_first(metadata, ('strict $' || repeat('.a', %s))::jsonpath)"
        " FROM whk.whk_01_webhooks",
        (MAX_JSON_DEPTH - 1,),
    ).fetchone()
    assert depth == ({"a": 1},)
    r = await _post(
        client, "/api/whk/webhooks", _with("metadata", _nested(MAX_JSON_DEPTH + 1), **HOOK), world.a.headers
    )
    assert _problem(r)["errors"][0]["pointer"] == "/metadata"
    # brackets inside strings are text, not nesting
    text = _json({"s": "[" * 1000, "t": '\\"{' * 500})
    r = await _post(
        client, "/api/whk/webhooks", _with("metadata", text, **{**HOOK, "name": "text"}), world.a.headers
    )
    assert r.status_code == 201, r.text


async def test_any_of_errors_name_the_real_problem(client: AsyncTestClient[Any], world: World):
    """``"retry_policy": {"schedule": [1]}`` says that schedule is unknown and schedule_s missing."""
    r = await client.post(
        "/api/whk/webhooks", json={**HOOK, "retry_policy": {"schedule": [1]}}, headers=world.a.headers
    )
    errors = _problem(r)["errors"]
    assert errors == [
        {"pointer": "/retry_policy/schedule", "message": "Object contains unknown field `schedule`"},
        {"pointer": "/retry_policy/schedule_s", "message": "Object missing required field `schedule_s`"},
    ]
    # a nested bound, a nullable number, a value of no accepted type, a tagged union
    cases: list[tuple[str, dict[str, Any], str, str]] = [
        (
            "/api/whk/webhooks",
            {**HOOK, "retry_policy": {"schedule_s": [1, 0]}},
            "/retry_policy/schedule_s/1",
            "less than the minimum of 0.001",
        ),
        (
            "/api/whk/webhooks",
            {**HOOK, "rate_limit_per_second": 5e-324},
            "/rate_limit_per_second",
            "less than the minimum of 0.001",
        ),
        ("/api/whk/webhooks", {**HOOK, "breaker_config": 5}, "/breaker_config", "expected null or object"),
        (
            "/api/whk/monitoring/alerts",
            {
                "name": "x",
                "condition": {"metric": "dead_letters", "operator": ">", "threshold": 1},
                "channels": [{"type": "email", "target": "not an address"}],
            },
            "/channels/0/target",
            "does not match",
        ),
    ]
    for path, body, pointer, message in cases:
        errors = _problem(await client.post(path, json=body, headers=world.a.headers))["errors"]
        assert [e["pointer"] for e in errors] == [pointer], errors
        assert message in errors[0]["message"], errors
        assert "anyOf" not in errors[0]["message"] and "oneOf" not in errors[0]["message"]
