"""A small, deterministic OpenAPI-driven request generator and the schemathesis-style checks.

schemathesis itself cannot be installed next to the pinned dependencies (4.x needs jsonschema-rs < 0.61,
3.x breaks on werkzeug 3), so this module implements what the API tests need from it, over whatever
routes the app registers:

* cases per operation: schema-valid requests (examples first, then generated), every query/path parameter
  alone with wrong types, boundary values and SQL-injection strings, bodies with an unknown field, the
  wrong JSON type, each property of the wrong type or injected, malformed JSON, and the hostile bodies
  (``HOSTILE_BODIES``: nested 100,000 levels deep, invalid UTF-8), which must be 400s;
* checks per response (schemathesis' defaults): not a server error, status code documented, content type
  documented, JSON body valid against the documented schema, and every 4xx/5xx RFC 9457 problem+json
  whose ``status`` equals the response status.

URL-looking strings are always replaced with a loopback address (tests never leave 127.0.0.1).
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jsonschema_rs

PROBLEM = "application/problem+json"
LOOPBACK_URL = "http://127.0.0.1:9/whk-fuzz"
INJECTIONS = (
    "' OR '1'='1",
    "1; DROP TABLE whk.audit_log; --",
    '" OR 1=1 --',
    "id DESC; SELECT pg_sleep(10)",
    "%' OR 'x'='x",
    "') UNION SELECT secret_enc FROM whk.webhook_secrets --",
    "\\x00'",
    '$.data ? (@ like_regex ".*")',
)
WRONG_VALUES: tuple[Any, ...] = (
    "abc",
    -1,
    0,
    2**63,
    "",
    "x" * 5000,
    "\uff11\uff12\uff13",
    "null",
    "2026-13-45",
)
_STRING_CANDIDATES = (
    "order.created",
    "order.*",
    "a",
    "abc",
    "key_abcdefgh12",
    "x1",
    "active",
    "$.data",
    "10.0.0.0/8",
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
)
METHODS = ("get", "put", "post", "delete", "patch")
# Bodies that answered 500 once (issue 15 §3): the decoder's recursion, invalid UTF-8. Kind "hostile".
HOSTILE_BODIES: tuple[bytes, ...] = (
    b'{"zz": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"zz": ' + b'{"a":' * 5000 + b"1" + b"}" * 5001,
    b'{"zz": "caf\xe9"}',
)


@dataclass
class Case:
    method: str
    path: str
    operation_id: str
    query: dict[str, str] = field(default_factory=dict)
    body: Any = None
    raw_body: bytes | None = None
    kind: str = "valid"
    injected_param: str | None = None

    def describe(self) -> str:
        body = self.raw_body if self.raw_body is not None else self.body
        return f"{self.method.upper()} {self.path} query={self.query} body={str(body)[:300]} [{self.kind}]"


def sanitize(value: Any) -> Any:
    if isinstance(value, str) and re.match(r"^(?i:https?|ftp|wss?)://", value):
        return LOOPBACK_URL
    if isinstance(value, dict):
        return {k: sanitize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [sanitize(v) for v in value]
    return value


class Generator:
    def __init__(self, doc: dict[str, Any], seed: int = 20261129) -> None:
        self.doc = doc
        self.rng = random.Random(seed)

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in schema and seen < 20:
            node: Any = self.doc
            for part in schema["$ref"].lstrip("#/").split("/"):
                node = node[part]
            schema = node
            seen += 1
        return schema

    def valid(self, schema: dict[str, Any], depth: int = 0) -> Any:
        s = self.resolve(schema)
        if depth > 6:
            return None
        if "const" in s:
            return s["const"]
        if s.get("enum"):
            return self.rng.choice(s["enum"])
        examples = s.get("examples")
        if isinstance(examples, list) and examples and self.rng.random() < 0.5:
            return sanitize(self.rng.choice(examples))
        for key in ("oneOf", "anyOf"):
            if key in s:
                branches = [b for b in s[key] if self.resolve(b).get("type") != "null"] or s[key]
                return self.valid(self.rng.choice(branches), depth + 1)
        if "allOf" in s:
            return self.valid(s["allOf"][0], depth + 1)
        kind = s.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if k != "null"] or kind
            kind = self.rng.choice(kinds)
        if kind == "object" or (kind is None and "properties" in s):
            props: dict[str, Any] = s.get("properties", {})
            required = set(s.get("required", []))
            out: dict[str, Any] = {}
            for name, sub in props.items():
                if name in required or self.rng.random() < 0.4:
                    out[name] = self.valid(sub, depth + 1)
            return out
        if kind == "array":
            lo = int(s.get("minItems", 0))
            hi = min(int(s.get("maxItems", lo + 2)), lo + 2)
            return [
                self.valid(s.get("items", {}), depth + 1) for _ in range(self.rng.randint(lo, max(lo, hi)))
            ]
        if kind == "string":
            return self._string(s)
        if kind == "integer":
            lo = int(s.get("minimum", s.get("exclusiveMinimum", 0) + (1 if "exclusiveMinimum" in s else 0)))
            hi = int(s.get("maximum", lo + 100))
            return self.rng.randint(lo, min(hi, lo + 100))
        if kind == "number":
            lo = float(s.get("minimum", s.get("exclusiveMinimum", 0.0)))
            return round(lo + 0.5 + self.rng.random() * 10, 3)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return "x"

    def _string(self, s: dict[str, Any]) -> str:
        fmt = s.get("format")
        if fmt == "date-time":
            return datetime.now(UTC).isoformat()
        if fmt == "date":
            return datetime.now(UTC).date().isoformat()
        if fmt == "uuid":
            return str(uuid.UUID(int=self.rng.getrandbits(128)))
        if fmt in ("uri", "url", "iri"):
            return LOOPBACK_URL
        if fmt == "email":
            return "fuzz@example.test"
        if fmt in ("ipv4", "ip"):
            return "127.0.0.1"
        lo, hi = int(s.get("minLength", 0)), int(s.get("maxLength", 64))
        pattern = s.get("pattern")
        candidates = [c for c in _STRING_CANDIDATES if not pattern or re.search(pattern, c)]
        value = self.rng.choice(candidates) if candidates else "a"
        if len(value) < lo:
            value = value + "a" * (lo - len(value))
        return sanitize(value[: max(hi, lo)])

    def wrong(self, schema: dict[str, Any]) -> Any:
        s = self.resolve(schema)
        kind = s.get("type")
        if kind == "string" or "string" in (kind or []):
            return self.rng.choice([12345, {"nested": True}, ["a"], "x" * 100_000])
        if kind in ("integer", "number"):
            return self.rng.choice(["abc", 2**70, -(2**70), 1.5e308, True])
        if kind == "array":
            return self.rng.choice(["not-an-array", {"a": 1}, [None, {"x": []}]])
        if kind == "object":
            return self.rng.choice([[], "string", 7])
        return self.rng.choice([{"x": 1}, "zz", -99])


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in sorted(doc["paths"].items()):
        for method in METHODS:
            op = item.get(method)
            if isinstance(op, dict):
                yield path, method, op


def _param_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return "" if value is None else str(value)


def cases(
    gen: Generator,
    path: str,
    method: str,
    op: dict[str, Any],
    path_values: dict[str, list[Any]],
    *,
    valid_count: int,
) -> list[Case]:
    params = op.get("parameters", [])
    path_params = [p for p in params if p["in"] == "path"]
    query_params = [p for p in params if p["in"] == "query"]
    body_schema = (
        op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        if op.get("requestBody")
        else None
    )
    oid = op.get("operationId", f"{method} {path}")

    def fill(values: dict[str, Any] | None = None) -> str:
        out = path
        for p in path_params:
            name = p["name"]
            chosen = (values or {}).get(name)
            if chosen is None:
                options = path_values.get(name) or [gen.valid(p.get("schema", {}))]
                chosen = gen.rng.choice(options)
            out = out.replace("{" + name + "}", _quote(_param_value(chosen)))
        return out

    def valid_query() -> dict[str, str]:
        q: dict[str, str] = {}
        for p in query_params:
            if p.get("required") or gen.rng.random() < 0.3:
                q[p["name"]] = _param_value(gen.valid(p.get("schema", {})))
        return q

    def valid_body() -> Any:
        return gen.valid(body_schema) if body_schema else None

    out: list[Case] = []
    for _ in range(valid_count):
        out.append(Case(method, fill(), oid, valid_query(), valid_body()))
    for p in query_params:
        for bad in (*INJECTIONS, *gen.rng.sample(WRONG_VALUES, 3)):
            kind = "injection" if bad in INJECTIONS else "wrong-query"
            out.append(
                Case(
                    method,
                    fill(),
                    oid,
                    {p["name"]: _param_value(bad)},
                    valid_body(),
                    kind=kind,
                    injected_param=p["name"],
                )
            )
    for p in path_params:
        for bad in ("abc", -1, 0, 2**63, "9" * 40, INJECTIONS[0], INJECTIONS[1]):
            out.append(Case(method, fill({p["name"]: bad}), oid, {}, valid_body(), kind="wrong-path"))
    if body_schema is not None:
        body = valid_body()
        if isinstance(body, dict):
            out.append(Case(method, fill(), oid, {}, {**body, "zz_unknown_field": 1}, kind="unknown-field"))
            resolved = gen.resolve(body_schema)
            for name, sub in resolved.get("properties", {}).items():
                out.append(Case(method, fill(), oid, {}, {**body, name: gen.wrong(sub)}, kind="wrong-type"))
                if gen.resolve(sub).get("type") == "string" or "string" in str(
                    gen.resolve(sub).get("anyOf", "")
                ):
                    out.append(
                        Case(
                            method,
                            fill(),
                            oid,
                            {},
                            {**body, name: gen.rng.choice(INJECTIONS)},
                            kind="injection",
                        )
                    )
        for bad_body in ([], "text", 42, None):
            out.append(Case(method, fill(), oid, {}, bad_body, kind="wrong-body"))
        out.append(Case(method, fill(), oid, {}, None, raw_body=b'{"unterminated": ', kind="malformed"))
        out.extend(
            Case(method, fill(), oid, {}, None, raw_body=raw, kind="hostile") for raw in HOSTILE_BODIES
        )
    return out


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def check(
    doc: dict[str, Any], op: dict[str, Any], case: Case, status: int, headers: Any, body: bytes
) -> list[str]:
    """Problems with one response ([] = conforming)."""
    problems: list[str] = []
    if status >= 500:
        problems.append(f"server error {status}")
    if case.kind == "hostile" and status not in (400, 403, 413):  # 403: an admin-only route, for a tenant
        problems.append(f"a hostile body answered {status}, not 400")
    ctype = (headers.get("content-type") or "").split(";")[0].strip()
    if status >= 400:
        if ctype != PROBLEM:
            problems.append(f"{status} is {ctype!r}, not problem+json")
        else:
            doc_body = json.loads(body)
            if doc_body.get("status") != status or not doc_body.get("title") or not doc_body.get("type"):
                problems.append(f"problem document is incomplete: {doc_body}")
            text = body.decode("utf-8", "replace")
            if "Traceback" in text or "psycopg" in text:
                problems.append("problem document leaks internals")
    responses = op.get("responses", {})
    spec = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX") or responses.get("default")
    if spec is None:
        problems.append(f"status {status} is not documented (documented: {sorted(responses)})")
        return problems
    content = spec.get("content") or {}
    if content and body:
        if ctype not in content:
            problems.append(f"content type {ctype!r} not documented for {status} ({sorted(content)})")
        elif ctype.endswith("json") and content[ctype].get("schema"):
            schema = {**content[ctype]["schema"], "components": doc["components"]}
            validator = jsonschema_rs.Draft202012Validator(schema)
            errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(json.loads(body))][:3]
            if errors:
                problems.append(f"body does not match the documented schema: {errors}")
    return problems
