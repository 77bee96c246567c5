"""OpenAPI 3.1 document: security schemes, the problem+json error shape, docs UI at /schema."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, Example, SecurityScheme, Server

from api.errors import PROBLEM_JSON

__all__ = ["Problem", "openapi_config", "problem_responses"]


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
    404: "No such resource (also for another tenant's ids)",
    409: "Conflicts with the current state",
    413: "Request body larger than WHK_API_MAX_BODY_BYTES",
    422: "Semantically invalid (one entry per problem in `errors`, with a JSON pointer)",
    429: "Rate limit exceeded (see Retry-After and RateLimit-* headers)",
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
