"""docs/api-resources.md against the OpenAPI document: the generated reference is current, its examples
fit their schemas, and every hand-written request and response example fits its route's schema."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from api.reference import BEGIN, END, document, example, render, replace_section

DOC = Path(__file__).resolve().parents[2] / "docs" / "api-resources.md"
PREFIX = "/api/whk"


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return document()


def _validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema_rs.Validator:
    return jsonschema_rs.Draft202012Validator(
        {**schema, "components": doc["components"]}, validate_formats=True
    )


def _problems(doc: dict[str, Any], schema: dict[str, Any], value: Any) -> list[str]:
    return [
        "/" + "/".join(map(str, e.instance_path)) + f": {e.message}"
        for e in _validator(doc, schema).iter_errors(value)
    ]


def test_the_committed_reference_is_the_rendering_of_the_document(openapi: dict[str, Any]):
    text = DOC.read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    fresh = replace_section(text, render(openapi))
    assert fresh == text, (
        "docs/api-resources.md is stale: run python -m api.reference --write docs/api-resources.md"
    )


def test_a_changed_shape_makes_the_reference_stale(openapi: dict[str, Any]):
    """The golden comparison can fail: a field added to the answer of POST /webhooks changes the page."""
    changed = json.loads(json.dumps(openapi))
    changed["components"]["schemas"]["WebhookCreated"]["properties"]["extra"] = {"type": "string"}
    text = DOC.read_text(encoding="utf-8")
    assert replace_section(text, render(changed)) != text


def test_post_webhooks_shows_its_real_answer(openapi: dict[str, Any]):
    """The answer named in issue 15: the webhook, its signing secret and the key id."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("#### `POST /api/whk/webhooks`") :]
    section = section[: section.index("\n#### ", 1)]
    shown = json.loads(section.split("Answers `201`", 1)[1].split("```json\n", 1)[1].split("```", 1)[0])
    assert set(shown) == {"webhook", "signing_secret", "key_id"}
    assert {"id", "url", "retry_policy", "breaker_config", "max_in_flight"} <= set(shown["webhook"])


def _operations(doc: dict[str, Any]):
    for path, item in doc["paths"].items():
        for method in ("get", "put", "post", "patch", "delete"):
            if method in item and path.startswith(PREFIX):
                yield method, path, item[method]


def test_every_generated_example_fits_its_schema(openapi: dict[str, Any]):
    checked = 0
    for method, path, op in _operations(openapi):
        body = op.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None:
            value = example(openapi, body["schema"], full=False)
            assert _problems(openapi, body["schema"], value) == [], (method, path, value)
            checked += 1
        for code, response in op["responses"].items():
            spec = (response.get("content") or {}).get("application/json")
            if code.startswith("2") and spec is not None and spec.get("schema"):
                value = example(openapi, spec["schema"], full=True)
                assert _problems(openapi, spec["schema"], value) == [], (method, path, code, value)
                checked += 1
    assert checked > 40


# `wh -X POST $WHK/webhooks -d '{…}'` in a sh block, optionally followed by `# {…}`: the answer.
_CALL = re.compile(
    r"wh -X (?P<method>[A-Z]+) \$WHK(?P<path>/[^\s']*) -d '(?P<body>[^']*)'(?:\n# (?P<answer>\{[^\n]*\}))?"
)


def _operation_for(doc: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    for template, item in doc["paths"].items():
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", re.escape(template).replace(r"\{", "{").replace(r"\}", "}"))
        if re.fullmatch(pattern, PREFIX + path) and method.lower() in item:
            op: dict[str, Any] = item[method.lower()]
            return op
    raise AssertionError(f"docs/api-resources.md calls {method} {path}, which the API does not have")


def hand_written_calls(text: str) -> list[tuple[str, str, Any, Any]]:
    handwritten = text[: text.index(BEGIN)]
    calls = []
    for m in _CALL.finditer(handwritten):
        answer = json.loads(m["answer"]) if m["answer"] else None
        calls.append((m["method"], m["path"], json.loads(m["body"]), answer))
    return calls


def check_calls(doc: dict[str, Any], calls: list[tuple[str, str, Any, Any]]) -> list[str]:
    problems: list[str] = []
    for method, path, body, answer in calls:
        op = _operation_for(doc, method, path)
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        problems += [f"{method} {path} body {p}" for p in _problems(doc, schema, body)]
        if answer is not None:
            ok = next(r for c, r in op["responses"].items() if c.startswith("2"))
            schema = ok["content"]["application/json"]["schema"]
            problems += [f"{method} {path} answer {p}" for p in _problems(doc, schema, answer)]
    return problems


def test_every_hand_written_example_fits_its_route(openapi: dict[str, Any]):
    calls = hand_written_calls(DOC.read_text(encoding="utf-8"))
    assert len(calls) >= 6
    assert check_calls(openapi, calls) == []


def test_a_stale_hand_written_example_is_found(openapi: dict[str, Any]):
    """The check can fail: a renamed field in a body, an answer missing a field."""
    stale = (
        '```sh\nwh -X POST $WHK/webhooks -d \'{"name": "x", "url": "https://e.example/h", '
        '"event_types": ["order.*"], "retry_policy": {"schedule": [1]}}\'\n'
        'wh -X POST $WHK/deliveries/bulk-retry -d \'{"dry_run": true}\'\n# {"dry_run": true}\n```\n' + BEGIN
    )
    problems = check_calls(openapi, hand_written_calls(stale))
    assert any("/retry_policy" in p for p in problems), problems
    assert any("answer" in p for p in problems), problems
