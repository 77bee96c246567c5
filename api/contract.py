"""The request contract: what the OpenAPI document says an operation refuses is refused before its handler
runs.

Built once at start-up (``RequestContract.from_app``), enforced by the app's ``before_request`` hook:

* query: only documented parameters; every value must fit its documented schema, formats included
  (``?until=0.5`` is not a date-time, ``?stauts=dead`` is not a filter) — checked against the published
  document itself, so the two cannot drift;
* body: validated against the documented request body schema — msgspec's own description of the
  handler's Struct (``api.openapi.struct_components``). Litestar converts bodies leniently (``"5"`` for
  an integer, a number for a date-time); the published schema refuses those, so do we. (A strict msgspec
  decode would refuse too much: JSON Schema's ``integer`` includes ``5.0``.)

``OPTIONS`` answers ``204`` with ``Allow`` listing every method of the path (``OptionsMiddleware``):
Litestar's automatic OPTIONS handler lists only the methods of the first handler registered at a path
(``OPTIONS /api/whk/webhooks`` said ``OPTIONS, POST``, hiding GET). A 405 comes from Litestar's router,
whose ``Allow`` already lists every method of the path.

A refusal is a 400 problem with one ``errors`` entry per problem (``pointer`` = JSON pointer:
``/query/<name>`` for parameters, ``/<field>/...`` in the body). 422 stays the answer to a request the
document accepts but the API refuses on its meaning (an SSRF rule, a cursor of another sort, NUL text).

Before a body is decoded it must be UTF-8 and nest at most ``MAX_JSON_DEPTH`` (64) arrays/objects below
its top level (``hostile_body_problems``): the decoder recurses, and a body nested 100,000 levels deep
exhausted Python's stack (500). The pointer names the top-level member that holds the deep value.

A value that matches no branch of an ``anyOf``/``oneOf`` (``RetryPolicy | null``, a tagged channel) is
explained by the branch it was meant for (``explain``): ``{"schedule": [1]}`` for a retry policy answers
"unknown field `schedule`" at ``/retry_policy/schedule`` and "missing required field `schedule_s`" at
``/retry_policy/schedule_s``, not "is not valid under any of the schemas listed in the 'anyOf' keyword".
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import jsonschema_rs
import msgspec
from litestar import Litestar, Request
from litestar.enums import ScopeType
from litestar.exceptions import SerializationException
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

from api.errors import BadRequest

__all__ = [
    "MAX_JSON_DEPTH",
    "OperationContract",
    "OptionsMiddleware",
    "QueryContract",
    "RequestContract",
    "contracts",
    "explain",
    "hostile_body_problems",
    "path_format",
    "query_contracts",
]

_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
_PARAM_TYPE = re.compile(r"\{([^}:]+):[^}]+\}")


# How deep any JSON value of a request body may nest (arrays and objects below the body's top level): the
# limit of every free-form field (metadata, data, payload, schema, auth_settings, delivery_preferences).
MAX_JSON_DEPTH = 64
_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def hostile_body_problems(raw: bytes) -> list[dict[str, str]]:
    """Problems that must stop a body before it is decoded: not UTF-8, or nested deeper than
    ``MAX_JSON_DEPTH`` below its top level (pointer: the top-level member holding the deep value)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [{"pointer": "", "message": f"the body is not valid UTF-8 (byte {exc.start})"}]
    limit = MAX_JSON_DEPTH + 1  # the body's own top-level object or array is level 1
    if raw.count(b"{") + raw.count(b"[") <= limit:
        return []
    # Strings out (escaped backslashes and quotes first, so every '"' left delimits a string), then the
    # running depth over the brackets alone.
    unescaped = raw.replace(b"\\\\", b"__").replace(b'\\"', b"__")
    outside = b"".join(unescaped.split(b'"')[::2])
    steps = outside.translate(None, _NOT_BRACKETS).translate(_BRACKET_STEPS)
    if max(accumulate(array("b", steps)), default=0) <= limit:
        return []
    message = f"nested deeper than {MAX_JSON_DEPTH} levels (the limit for any JSON value in a request body)"
    return [{"pointer": _deep_member(raw, limit), "message": message}]


def _deep_member(raw: bytes, limit: int) -> str:
    """The pointer of the top-level member in which the nesting first passes ``limit`` ("" if none)."""
    depth, key = 0, ""
    for token in _JSON_TOKENS.finditer(raw):
        text = token.group()
        if text[:1] == b'"':
            if depth == 1:
                try:
                    key = str(msgspec.json.decode(text))
                except msgspec.DecodeError:
                    key = text[1:-1].decode("utf-8", "replace")
            continue
        depth += 1 if text in (b"{", b"[") else -1
        if depth > limit:
            break
    return f"/{_escape(key)}" if key and raw.lstrip()[:1] == b"{" else ""


def path_format(path_template: str) -> str:
    """Litestar's route template (``/x/{id:int}``) as the OpenAPI path (``/x/{id}``)."""
    return _PARAM_TYPE.sub(r"{\1}", path_template)


@dataclass(frozen=True, slots=True)
class QueryContract:
    """The documented query parameters of one operation, with a validator per parameter."""

    names: frozenset[str]
    validators: Mapping[str, jsonschema_rs.Validator]

    def problems(self, params: Mapping[str, list[str]]) -> list[dict[str, str]]:
        """One error per undeclared parameter or value no reading of which fits the documented schema."""
        errors: list[dict[str, str]] = []
        for name in sorted(params):
            if name not in self.names:
                errors.append({"pointer": f"/query/{name}", "message": "unknown parameter"})
                continue
            validator = self.validators.get(name)
            if validator is None:
                continue
            for raw in params[name]:
                readings = _readings(raw)
                if not any(validator.is_valid(v) for v in readings):
                    error = next(iter(validator.iter_errors(readings[-1])), None)
                    explained = next(explain(error), None) if error is not None else None
                    errors.append(
                        {
                            "pointer": f"/query/{name}",
                            "message": explained["message"] if explained else "invalid value",
                        }
                    )
        return errors


def _readings(raw: str) -> list[Any]:
    """The values a query string may stand for: the string, and a number or boolean when it reads as one."""
    out: list[Any] = [raw]
    if raw in ("true", "false"):
        out.append(raw == "true")
    try:
        out.append(int(raw))
    except ValueError:
        try:
            number = float(raw)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                out.append(number)
    return out


def _refs(node: Any, found: set[str]) -> None:
    """Every ``#/components/schemas/NAME`` a schema node refers to (NAME added to ``found``)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            found.add(ref.rsplit("/", 1)[1])
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def _validator(schema: dict[str, Any], components: dict[str, Any]) -> jsonschema_rs.Validator:
    """A validator of ``schema`` carrying only the components it reaches through ``$ref`` (compiling the
    whole components block for each of the document's schemas made building the app ~0.3 s slower)."""
    schemas = components.get("schemas", {})
    names: set[str] = set()
    _refs(schema, names)
    todo = list(names)
    while todo:
        more: set[str] = set()
        _refs(schemas.get(todo.pop(), {}), more)
        todo.extend(more - names)
        names |= more
    body = {**schema, "components": {"schemas": {n: schemas[n] for n in names if n in schemas}}}
    return jsonschema_rs.Draft202012Validator(body if names else schema, validate_formats=True)


def query_contracts(doc: dict[str, Any]) -> dict[tuple[str, str], QueryContract]:
    """``{(openapi path, METHOD): QueryContract}`` of every documented operation (``doc`` as a dict).

    Array-typed parameters are checked for their name only. Formats (``date-time``, ``uuid``) are
    validated: the server would otherwise read ``0.5`` as a Unix time.
    """
    components = doc.get("components", {})
    out: dict[tuple[str, str], QueryContract] = {}
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict) or method not in _METHODS:
                continue
            names: set[str] = set()
            validators: dict[str, jsonschema_rs.Validator] = {}
            for p in op.get("parameters", []):
                if p.get("in") != "query":
                    continue
                names.add(p["name"])
                schema = p.get("schema") or {}
                if schema.get("type") == "array" or "array" in str(schema.get("oneOf", "")):
                    continue
                validators[p["name"]] = _validator(schema, components)
            out[(path, method.upper())] = QueryContract(frozenset(names), validators)
    return out


@dataclass(frozen=True, slots=True)
class OperationContract:
    """What one operation accepts: its query parameters and, when it takes a JSON body, its schema."""

    query: QueryContract
    body: jsonschema_rs.Validator | None

    def body_problems(self, body: Any) -> list[dict[str, str]]:
        """One error per place the body breaks its documented schema (JSON pointers into the body)."""
        if self.body is None:
            return []
        errors: list[dict[str, str]] = []
        for error in self.body.iter_errors(body):
            errors.extend(explain(error))
        return errors


def _escape(part: str | int) -> str:
    return str(part).replace("~", "~0").replace("/", "~1")


def explain(error: jsonschema_rs.ValidationError) -> Iterator[dict[str, str]]:
    """One ``{"pointer", "message"}`` per real problem behind a validation error.

    Unknown fields get one entry each, pointing at the field; a missing one points where it belongs. A
    value valid under no branch of an ``anyOf``/``oneOf`` is explained by the branch it was meant for:
    branches whose type it does not even have (``null`` for an object) and tagged branches whose tag it
    does not carry are passed over, and of the rest the one with the fewest problems speaks. Only when
    every branch is of another type does one entry say which types were expected.
    """
    kinds = jsonschema_rs.ValidationErrorKind
    kind = error.kind
    at = "".join(f"/{_escape(p)}" for p in error.instance_path)
    if isinstance(kind, kinds.AdditionalProperties):
        # as msgspec words it
        for name in kind.unexpected:
            yield {"pointer": f"{at}/{_escape(name)}", "message": f"Object contains unknown field `{name}`"}
    elif isinstance(kind, kinds.Required):
        yield {
            "pointer": f"{at}/{_escape(kind.property)}",
            "message": f"Object missing required field `{kind.property}`",
        }
    elif isinstance(kind, kinds.AnyOf | kinds.OneOfNotValid):
        branches = [branch for branch in kind.context if not _other_type(branch, error.instance_path)]
        if not branches:
            types = sorted(
                {
                    t
                    for branch in kind.context
                    for e in branch
                    if isinstance(e.kind, kinds.Type)
                    for t in e.kind.types
                }
            )
            yield {"pointer": at, "message": f"expected {' or '.join(types)}" if types else error.message}
            return
        best = min(branches, key=lambda branch: (_tag_mismatch(branch, error.instance_path), len(branch)))
        for sub_error in best:
            yield from explain(sub_error)
    else:
        yield {"pointer": at, "message": error.message}


def _other_type(branch: list[jsonschema_rs.ValidationError], path: list[str | int]) -> bool:
    """The branch refuses the value for its JSON type alone."""
    return bool(branch) and all(
        isinstance(e.kind, jsonschema_rs.ValidationErrorKind.Type) and list(e.instance_path) == list(path)
        for e in branch
    )


def _tag_mismatch(branch: list[jsonschema_rs.ValidationError], path: list[str | int]) -> bool:
    """The branch is a tagged variant whose tag the value does not carry (a const/enum on a direct member)."""
    kinds = jsonschema_rs.ValidationErrorKind
    return any(
        isinstance(e.kind, kinds.Constant | kinds.Enum) and list(e.instance_path)[:-1] == list(path)
        for e in branch
    )


def contracts(doc: dict[str, Any]) -> dict[tuple[str, str], OperationContract]:
    """``{(openapi path, METHOD): OperationContract}`` of every documented operation (``doc`` as a dict)."""
    components = doc.get("components", {})
    queries = query_contracts(doc)
    out: dict[tuple[str, str], OperationContract] = {}
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict) or method not in _METHODS:
                continue
            content = (op.get("requestBody") or {}).get("content") or {}
            schema = (content.get("application/json") or {}).get("schema")
            body = None if schema is None else _validator(schema, components)
            out[(path, method.upper())] = OperationContract(queries[(path, method.upper())], body)
    return out


class RequestContract:
    """Every documented operation's contract, keyed by (OpenAPI path, METHOD), and the methods of every
    path (for OPTIONS)."""

    def __init__(
        self, operations: Mapping[tuple[str, str], OperationContract], allow: Mapping[str, str]
    ) -> None:
        self.operations = dict(operations)
        self.allow = dict(allow)  # path template (/x/{id}) -> "GET, OPTIONS, POST"

    @classmethod
    def from_app(cls, app: Litestar) -> RequestContract:
        """Built from the app's OpenAPI document (call once the document is complete) and its routes."""
        methods: dict[str, set[str]] = {}
        for route in app.routes:
            if isinstance(route, HTTPRoute):
                for handler in route.route_handlers:
                    methods.setdefault(route.path_format, set()).update(handler.http_methods)
        return cls(
            contracts(app.openapi_schema.to_schema()),
            {path: ", ".join(sorted(m)) for path, m in methods.items()},
        )

    async def enforce(self, request: Request[Any, Any, Any]) -> None:
        """Raise ``BadRequest`` when the request breaks its operation's documented contract."""
        template = request.scope.get("path_template")
        contract = self.operations.get((path_format(template), request.method)) if template else None
        if contract is None:
            return
        params = request.query_params
        errors = contract.query.problems({k: params.getall(k) for k in params})
        if errors:
            first = errors[0]["pointer"].removeprefix("/query/")
            raise BadRequest(f"query parameter {first!r}: {errors[0]['message']}", extra={"errors": errors})
        if contract.body is None:
            return
        hostile = hostile_body_problems(await request.body())
        if hostile:
            raise BadRequest(f"the body cannot be read: {hostile[0]['message']}", extra={"errors": hostile})
        try:
            body = await request.json()
        except SerializationException as exc:
            raise BadRequest(
                "the body is not valid JSON", extra={"errors": [{"pointer": "", "message": "not JSON"}]}
            ) from exc
        errors = contract.body_problems(body)
        if errors:
            raise BadRequest(
                f"Validation failed for {request.method} {request.url.path}", extra={"errors": errors}
            )


class OptionsMiddleware:
    """``OPTIONS`` → 204 with ``Allow`` = every method of the matched path (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and scope["method"] == "OPTIONS":
            contract = scope["litestar_app"].state.get("contract")
            allow = contract.allow.get(scope.get("path_template", "")) if contract else None
            if allow is not None:
                await send(
                    HTTPResponseStartEvent(
                        type="http.response.start", status=204, headers=[(b"allow", allow.encode())]
                    )
                )
                await send(HTTPResponseBodyEvent(type="http.response.body", body=b"", more_body=False))
                return
        await self.app(scope, receive, send)
