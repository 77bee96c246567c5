"""OpenAPI 3.1 document: security schemes, the problem+json error shape, docs UI at /schema.

Body and response shapes are msgspec Structs, and msgspec is what validates them; Litestar's own schema
generation drops much of what msgspec enforces (patterns of list items and dict keys, ``gt``/``lt``,
constraints on aliased ``Annotated`` types, ``forbid_unknown_fields``). ``struct_components`` therefore
replaces the component schema of every Struct with ``msgspec.json.schema_components`` — the validator's
own description — so the document tells exactly what a body must be.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping
from re import Pattern
from typing import Annotated, Any

import msgspec
from litestar import Litestar, Router
from litestar.connection import ASGIConnection
from litestar.exceptions import NotFoundException
from litestar.handlers import BaseRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
    Example,
    OpenAPI,
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    Schema,
    SecurityScheme,
    Server,
)
from litestar.params import ParameterKwarg
from litestar.routes import HTTPRoute

from api.errors import PROBLEM_JSON

__all__ = [
    "Problem",
    "complete_error_responses",
    "exact_parameter_bounds",
    "openapi_config",
    "problem_responses",
    "struct_components",
    "wire_structs",
]


class ProblemError(msgspec.Struct, frozen=True):
    pointer: Annotated[str, msgspec.Meta(examples=["/url"])]
    message: str


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """RFC 9457 problem details, as every 4xx/5xx of this API answers."""

    type: Annotated[str, msgspec.Meta(examples=["urn:whk:problem:not-found"])]
    title: str
    status: Annotated[int, msgspec.Meta(ge=400, le=599)]
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[ProblemError] | None = None


_DESCRIPTIONS = {
    400: "Malformed request (one entry per invalid field in `errors`)",
    401: "Missing, invalid, expired or revoked credentials",
    403: "Credentials lack the scope, the source address is not allowed, or the consumer is not active",
    404: "No such resource (also for another tenant's ids, in the path, the query or the body)",
    409: "Conflicts with the current state",
    413: "Request body larger than WHK_API_MAX_BODY_BYTES",
    422: "Semantically invalid (one entry per problem in `errors`, with a JSON pointer)",
    429: "Rate limit exceeded (see Retry-After and RateLimit-* headers)",
    500: "Internal error (quote the request_id to the operator)",
    503: "Database unavailable",
}


def problem_responses(*codes: int) -> dict[int, ResponseSpec]:
    """``responses=`` for a handler: each status documented as application/problem+json."""
    return {
        code: ResponseSpec(
            data_container=Problem,
            description=_DESCRIPTIONS.get(code, "Error"),
            media_type=PROBLEM_JSON,
            generate_examples=False,
            examples=[
                Example(
                    summary=_DESCRIPTIONS.get(code, "Error"),
                    value={"type": "urn:whk:problem:error", "title": "Error", "status": code},
                )
            ],
        )
        for code in codes
    }


def _docs_disabled(_connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
    raise NotFoundException()


def openapi_config(*, version: str, enabled: bool) -> OpenAPIConfig:
    """The document is always built (``api.contract`` enforces it); ``enabled=False`` (WHK_API_DOCS)
    only stops serving it: every /schema route answers 404."""
    hidden = None if enabled else Router("/schema", route_handlers=[], guards=[_docs_disabled])
    return OpenAPIConfig(
        openapi_router=hidden,
        title="WHK management API",
        version=version,
        description=(
            "Manage WHK webhooks, events, deliveries and security. Authenticate with an API key "
            "(`Authorization: Bearer whk_...` or `X-API-Key`) or a JWT (`Authorization: Bearer <jwt>`). "
            "Every error is RFC 9457 application/problem+json. See docs/api.md."
        ),
        path="/schema",
        render_plugins=[ScalarRenderPlugin(path="/"), SwaggerRenderPlugin(path="/swagger")],
        servers=[Server(url="/")],
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(
                    type="http", scheme="bearer", description="API key (whk_...) or JWT"
                ),
                "apiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header"),
            }
        ),
        security=[{"bearer": []}, {"apiKey": []}],
        use_handler_docstrings=True,
        create_examples=False,
    )


_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
_PLATFORM_ERRORS = (400, 401, 403, 404, 409, 413, 422, 429, 500, 503)


def complete_error_responses(doc: OpenAPI, *, public_paths: Pattern[str]) -> None:
    """Document, on every operation, the errors the platform itself may answer (auth, scope, rate limit,
    body limit, validation, internal): all application/problem+json. Public operations get
    ``security: []`` and no 401/403/429."""
    schemas = doc.components.schemas or {}
    ref = next((f"#/components/schemas/{name}" for name in schemas if name.endswith("Problem")), None)
    content_schema: Schema | Reference = Reference(ref=ref) if ref else Schema(type=OpenAPIType.OBJECT)
    for path, item in (doc.paths or {}).items():
        public = public_paths.match(path) is not None
        for method in ("get", "put", "post", "delete", "patch", "head", "options", "trace"):
            op: Operation | None = getattr(item, method, None)
            if op is None:
                continue
            if public:
                op.security = []
            responses = op.responses if op.responses is not None else {}
            mutating = method in ("put", "post", "delete", "patch")
            for code in _PLATFORM_ERRORS:
                if public and code in (401, 403, 429):
                    continue
                if code == 413 and op.request_body is None:
                    continue
                # 404: an unknown id, or another tenant's, wherever it is named (path, query, body);
                # 409/422: what the database refuses (unique, foreign key, check, bad value), mapped by
                # api.errors for every handler.
                if code == 404 and public:
                    continue
                if code == 409 and not mutating:
                    continue
                responses.setdefault(
                    str(code),
                    OpenAPIResponse(
                        description=_DESCRIPTIONS.get(code, "Internal error"),
                        content={PROBLEM_JSON: OpenAPIMediaType(schema=content_schema)},
                    ),
                )
            # Every error this API sends is problem+json, including those Litestar documents itself
            # (its 400 says application/json).
            for code_text, resp in responses.items():
                if not isinstance(resp, OpenAPIResponse) or code_text[:1] not in ("4", "5"):
                    continue
                if not resp.content or PROBLEM_JSON not in resp.content:
                    resp.content = {PROBLEM_JSON: OpenAPIMediaType(schema=content_schema)}
            op.responses = responses


# JSON Schema keywords whose value is a schema / a list of schemas / a map of schemas.
_SUBSCHEMA = frozenset(
    (
        "items",
        "not",
        "if",
        "then",
        "else",
        "contains",
        "additionalProperties",
        "propertyNames",
        "contentSchema",
    )
)
_SUBSCHEMA_LIST = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SUBSCHEMA_MAP = frozenset({"properties", "patternProperties", "dependentSchemas"})
_SCHEMA_FIELD = {str(f.metadata.get("alias", f.name)): f.name for f in dataclasses.fields(Schema)}


def _to_spec(doc: Mapping[str, Any]) -> Schema | Reference:
    """A JSON Schema document (as msgspec writes it) as Litestar's spec objects."""
    if "$ref" in doc:
        return Reference(ref=str(doc["$ref"]))
    kwargs: dict[str, Any] = {}
    for key, value in doc.items():
        if key in _SUBSCHEMA:
            value = value if isinstance(value, bool) else _to_spec(value)
        elif key in _SUBSCHEMA_LIST:
            value = [_to_spec(v) for v in value]
        elif key in _SUBSCHEMA_MAP:
            value = {k: _to_spec(v) for k, v in value.items()}
        elif key == "type":
            value = OpenAPIType(value) if isinstance(value, str) else [OpenAPIType(v) for v in value]
        elif key == "format" and value in OpenAPIFormat._value2member_map_:
            value = OpenAPIFormat(value)
        # a keyword Litestar's Schema has no field for is a KeyError: found at start-up, never served wrong
        kwargs[_SCHEMA_FIELD[key]] = value
    return Schema(**kwargs)


def _structs(annotation: Any, out: set[type[msgspec.Struct]]) -> None:
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        out.add(annotation)
        return
    for arg in typing.get_args(annotation):
        _structs(arg, out)


def wire_structs(app: Litestar) -> list[type[msgspec.Struct]]:
    """Every Struct a documented handler reads as its body or answers with (documented responses too)."""
    found: set[type[msgspec.Struct]] = set()
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if not handler.resolve_include_in_schema():
                continue
            signature = handler.parsed_fn_signature
            data = signature.parameters.get("data")
            if data is not None:
                _structs(data.annotation, found)
            _structs(signature.return_type.annotation, found)
            for spec in (handler.responses or {}).values():
                _structs(spec.data_container, found)
    return sorted(found, key=lambda t: (t.__module__, t.__qualname__))


def struct_components(doc: OpenAPI, structs: Iterable[type[msgspec.Struct]]) -> None:
    """Replace the component schema of each Struct in ``structs`` (and the Structs they contain) with
    msgspec's: the constraints msgspec enforces (patterns, bounds, exclusive bounds, closed objects with
    ``additionalProperties: false``, dict key patterns) are then all in the document."""
    _, components = msgspec.json.schema_components(list(structs), ref_template="#/components/schemas/{name}")
    schemas = dict(doc.components.schemas or {})
    for name, schema in components.items():
        converted = _to_spec(schema)
        assert isinstance(converted, Schema)
        schemas[name] = converted
    doc.components.schemas = schemas


_BOUNDS = (("ge", "minimum"), ("le", "maximum"), ("gt", "exclusive_minimum"), ("lt", "exclusive_maximum"))


def exact_parameter_bounds(doc: OpenAPI, app: Litestar) -> None:
    """Write the declared integer bounds of path/query parameters. Litestar writes them as floats, and
    ``le=2**63 - 1`` (the bigint ceiling of every id) becomes ``9.223372036854776e18`` = 2^63: one past
    what the API accepts, so a client reading the document would send ids the API refuses. It also
    drops a bound of 0 (``ge=0`` on an optional parameter is missing from its document)."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or (item := (doc.paths or {}).get(route.path_format)) is None:
            continue
        for handler in route.route_handlers:
            declared: dict[str, ParameterKwarg] = {}
            for name, field in handler.parsed_fn_signature.parameters.items():
                if isinstance(field.kwarg_definition, ParameterKwarg):
                    declared[field.kwarg_definition.name or name] = field.kwarg_definition
            for method in handler.http_methods:
                op: Operation | None = getattr(item, method.lower(), None)
                for param in (op.parameters or []) if op is not None else []:
                    kwarg = declared.get(param.name) if isinstance(param, Parameter) else None
                    schema = param.schema if isinstance(param, Parameter) else None
                    if kwarg is None or not isinstance(schema, Schema):
                        continue
                    if not _numeric(schema):
                        continue
                    for source, target in _BOUNDS:
                        value = getattr(kwarg, source)
                        if isinstance(value, int) and not isinstance(value, bool):
                            setattr(schema, target, value)


def _numeric(schema: Schema) -> bool:
    types = [schema.type, *(s.type for s in schema.one_of or () if isinstance(s, Schema))]
    return any(t in (OpenAPIType.INTEGER, OpenAPIType.NUMBER) for t in types)
