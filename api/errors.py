"""Every API error as RFC 9457 ``application/problem+json``, mapped in one place.

Error tree (raise these from controllers and repositories; the handlers below render them)::

    ApiError                 base: status, title, detail, extra members
    ├── BadRequest           400 malformed input that passed schema validation
    ├── Unauthorized         401 missing/invalid credentials (WWW-Authenticate set)
    ├── Forbidden            403 authenticated but not allowed (scope, IP allowlist, disabled consumer)
    ├── NotFound             404 also for another tenant's ids (no existence oracle)
    ├── Conflict             409 state or uniqueness conflict
    ├── Unprocessable        422 semantic validation; ``errors=[{"pointer": "/url", "message": ...}]``
    ├── TooManyRequests      429 rate limit (Retry-After and RateLimit-* headers)
    └── ServiceUnavailable   503 database unreachable

Also mapped: Litestar's ``HTTPException`` family (400 validation with one error per field, 404/405 from
the router, 413 from the body size limit), psycopg errors (unique → 409, foreign key / check / bad
value → 422 naming the constraint only, connection trouble → 503) and anything else → 500. A problem
document never carries a stack trace, SQL text or a driver message beyond PostgreSQL's primary line for
422s the client caused; the full exception goes to the log with the request id.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import psycopg
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from whk.errors import DatabaseUnavailable

__all__ = [
    "PROBLEM_JSON",
    "ApiError",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "NotFound",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "Unprocessable",
    "exception_handlers",
    "problem_response",
]

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "urn:whk:problem:"

log = logging.getLogger("whk.api")


class ApiError(Exception):
    """Base of errors the API turns into problem documents."""

    status: int = 500
    title: str = "Internal Server Error"
    slug: str = "internal"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class BadRequest(ApiError):
    status, title, slug = 400, "Bad Request", "bad-request"


class Unauthorized(ApiError):
    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.headers.setdefault("WWW-Authenticate", 'Bearer realm="whk"')


class Forbidden(ApiError):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(ApiError):
    status, title, slug = 404, "Not Found", "not-found"


class Conflict(ApiError):
    status, title, slug = 409, "Conflict", "conflict"


class Unprocessable(ApiError):
    """422 with one entry per problem: ``errors=[{"pointer": "/field", "message": "..."}]``."""

    status, title, slug = 422, "Unprocessable Content", "validation"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: list[dict[str, str]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(detail, **kwargs)
        self.errors = list(errors or [])
        if self.errors:
            self.extra["errors"] = self.errors


class TooManyRequests(ApiError):
    status, title, slug = 429, "Too Many Requests", "rate-limited"


class ServiceUnavailable(ApiError):
    status, title, slug = 503, "Service Unavailable", "unavailable"


_TITLES = {
    400: ("Bad Request", "bad-request"),
    401: ("Unauthorized", "unauthorized"),
    403: ("Forbidden", "forbidden"),
    404: ("Not Found", "not-found"),
    405: ("Method Not Allowed", "method-not-allowed"),
    406: ("Not Acceptable", "not-acceptable"),
    409: ("Conflict", "conflict"),
    413: ("Content Too Large", "too-large"),
    415: ("Unsupported Media Type", "unsupported-media-type"),
    422: ("Unprocessable Content", "validation"),
    429: ("Too Many Requests", "rate-limited"),
    500: ("Internal Server Error", "internal"),
    503: ("Service Unavailable", "unavailable"),
}


def _request_id(request: Request[Any, Any, Any]) -> str | None:
    rid = request.scope.get("state", {}).get("request_id")
    return rid if isinstance(rid, str) else None


def _ctx(request: Request[Any, Any, Any], status: int) -> dict[str, Any]:
    """The fields of a log line about one request's error (whk.logs emits them as JSON keys)."""
    return {
        "request_id": _request_id(request),
        "method": request.method,
        "path": request.url.path,
        "status": status,
    }


def problem_response(
    request: Request[Any, Any, Any],
    status: int,
    *,
    detail: str | None = None,
    title: str | None = None,
    slug: str | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response[dict[str, Any]]:
    default_title, default_slug = _TITLES.get(status, ("Error", "error"))
    body: dict[str, Any] = {
        "type": TYPE_BASE + (slug or default_slug),
        "title": title or default_title,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    body["instance"] = request.url.path
    rid = _request_id(request)
    if rid:
        body["request_id"] = rid
    for key, value in (extra or {}).items():
        body.setdefault(key, value)
    if status < 500 and log.isEnabledFor(logging.DEBUG):
        log.debug(
            "%s %s answered %d: %s",
            request.method,
            request.url.path,
            status,
            detail or body["title"],
            extra=_ctx(request, status),
        )
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=dict(headers or {}))


def _api_error(request: Request[Any, Any, Any], exc: ApiError) -> Response[dict[str, Any]]:
    return problem_response(
        request,
        exc.status,
        detail=exc.detail,
        title=exc.title,
        slug=exc.slug,
        headers=exc.headers,
        extra=exc.extra,
    )


def _pointer(key: str | None, source: str | None) -> str:
    """A JSON pointer for a Litestar validation error key ('url', 'items.0.name', '$.x')."""
    if not key:
        return "" if source in (None, "body") else f"/{source}"
    parts = [p for p in key.replace("$", "").replace("[", ".").replace("]", "").split(".") if p]
    escaped = "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)
    prefix = "" if source in (None, "body") else f"/{source}"
    return f"{prefix}/{escaped}"


_AT_PATH = re.compile(r" - at `\$((?:\.[^.`\[]+|\[\d+\])*)`$")
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `([^`]*)`")


def _body_pointer(message: str) -> tuple[str, str]:
    """(pointer, message) for a msgspec body error ('... - at `$.a[0].b`', 'unknown field `x`')."""
    m = _AT_PATH.search(message)
    base = ""
    if m:
        base = m.group(1).replace("[", ".").replace("]", "")
        message = message[: m.start()]
    u = _UNKNOWN_FIELD.match(message)
    if u:
        base = f"{base}.{u.group(1)}"
    parts = [p for p in base.split(".") if p]
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts) if parts else "", message


def _validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    errors: list[dict[str, str]] = []
    if isinstance(exc.extra, list):
        for item in exc.extra:
            if not isinstance(item, Mapping):
                continue
            message = str(item.get("message", "invalid value"))
            if item.get("key") == "data" and item.get("source") in (None, "body"):
                pointer, message = _body_pointer(message)
            else:
                pointer = _pointer(item.get("key"), item.get("source"))
            errors.append({"pointer": pointer, "message": message})
    detail = exc.detail if exc.detail and "Traceback" not in exc.detail else "the request is not valid"
    return problem_response(request, 400, detail=detail, extra={"errors": errors} if errors else None)


def _http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    if status >= 500:
        log.error(
            "HTTP %s on %s (request %s): %s",
            status,
            request.url.path,
            _request_id(request),
            exc.detail,
            extra=_ctx(request, status),
        )
        return problem_response(request, status, headers=exc.headers)
    detail = exc.detail if exc.detail and exc.detail != _TITLES.get(status, ("",))[0] else None
    return problem_response(request, status, detail=detail, headers=exc.headers)


_SQLSTATE_MAP: dict[str, tuple[int, str]] = {
    "23505": (409, "a resource with the same unique value already exists"),
    "23503": (409, "the resource is referenced by, or references, a missing resource"),
    "23514": (422, "a value violates a constraint"),
    "23502": (422, "a required value is missing"),
    "22P02": (422, "a value has an invalid format"),
    "22023": (422, "a value is not valid"),
    "22001": (422, "a value is too long"),
    "22003": (422, "a number is out of range"),
    "22007": (422, "a date/time value has an invalid format"),
    "22008": (422, "a date/time value is out of range"),
    "2201B": (422, "an invalid regular expression"),
    "40001": (503, "the request conflicted with a concurrent one; retry it"),
    "40P01": (503, "the request conflicted with a concurrent one; retry it"),
    "57014": (503, "the database cancelled a slow statement"),
}


def _database_error(request: Request[Any, Any, Any], exc: psycopg.Error) -> Response[dict[str, Any]]:
    sqlstate = getattr(exc, "sqlstate", None) or ""
    rid = _request_id(request)
    mapped = _SQLSTATE_MAP.get(sqlstate)
    if isinstance(exc, psycopg.OperationalError) and mapped is None:
        log.error(
            "database unavailable on %s (request %s): %s",
            request.url.path,
            rid,
            exc,
            extra=_ctx(request, 503),
        )
        return problem_response(request, 503, detail="the database is unavailable; retry later")
    if mapped is None:
        log.exception(
            "database error on %s (request %s)", request.url.path, rid, exc_info=exc, extra=_ctx(request, 500)
        )
        return problem_response(request, 500, detail="internal error; quote the request id to the operator")
    status, detail = mapped
    extra: dict[str, Any] = {}
    constraint = getattr(exc.diag, "constraint_name", None)
    if constraint:
        extra["constraint"] = constraint
    log.info(
        "database rejected request %s on %s: %s %s",
        rid,
        request.url.path,
        sqlstate,
        constraint or "",
        extra={**_ctx(request, status), "sqlstate": sqlstate},
    )
    headers = {"Retry-After": "1"} if status == 503 else None
    return problem_response(request, status, detail=detail, extra=extra, headers=headers)


def _unavailable(request: Request[Any, Any, Any], exc: DatabaseUnavailable) -> Response[dict[str, Any]]:
    log.error("database unavailable (request %s): %s", _request_id(request), exc, extra=_ctx(request, 503))
    return problem_response(request, 503, detail="the database is unavailable; retry later")


def _internal(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception(
        "unhandled error on %s (request %s)",
        request.url.path,
        _request_id(request),
        exc_info=exc,
        extra=_ctx(request, 500),
    )
    return problem_response(request, 500, detail="internal error; quote the request id to the operator")


def exception_handlers() -> ExceptionHandlersMap:
    """The app's exception handlers (most specific class wins)."""
    return {
        ApiError: _api_error,
        ValidationException: _validation,
        HTTPException: _http_exception,
        psycopg.Error: _database_error,
        DatabaseUnavailable: _unavailable,
        Exception: _internal,
    }
