"""OpenAPI 3.1 document: security schemes, the problem+json error shape, docs UI at /schema."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from re import Pattern
from typing import Annotated, Any

import jsonschema_rs
import msgspec
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
    Example,
    OpenAPI,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    Schema,
    SecurityScheme,
    Server,
)

from api.errors import PROBLEM_JSON

__all__ = [
    "Problem",
    "QueryContract",
    "complete_error_responses",
    "openapi_config",
    "path_format",
    "problem_responses",
    "query_contracts",
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


def openapi_config(*, version: str, enabled: bool) -> OpenAPIConfig | None:
    if not enabled:
        return None
    return OpenAPIConfig(
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


_PARAM_TYPE = re.compile(r"\{([^}:]+):[^}]+\}")


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
                if not any(validator.is_valid(v) for v in _readings(raw)):
                    message = next(iter(validator.iter_errors(_readings(raw)[-1])), None)
                    errors.append(
                        {
                            "pointer": f"/query/{name}",
                            "message": message.message if message else "invalid value",
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


def query_contracts(doc: dict[str, Any]) -> dict[tuple[str, str], QueryContract]:
    """``{(openapi path, METHOD): QueryContract}`` of every documented operation (``doc`` as a dict).

    Array-typed parameters are checked for their name only.
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
                validators[p["name"]] = jsonschema_rs.Draft202012Validator(
                    {**schema, "components": components}, validate_formats=False
                )
            out[(path, method.upper())] = QueryContract(frozenset(names), validators)
    return out
