"""``/api/whk/exports/{deliveries,events}``: the history as NDJSON, CSV or Parquet, streamed.

The same export as ``whk export`` (``whk.export``: keyset pages of ``PAGE`` rows, each encoded and sent
before the next is read). Tenancy as in the delivery and event pages: a consumer credential exports its
own deliveries and the events routed to its webhooks; an admin exports everything. Scopes: exporting
deliveries needs ``deliveries:read``, events ``events:read`` (``api.auth.area_of``).

The rows are read on a connection of their own, held while the body streams (the request's connection
is returned before the response is sent), inside one REPEATABLE READ READ ONLY transaction: one snapshot
from the first page to the last.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema
from litestar.params import QueryParameter
from litestar.response import Stream
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.deps import Principal
from api.errors import ApiError, Unprocessable
from api.openapi import problem_responses
from whk.export import MEDIA_TYPES, PARQUET_HINT, ExportError, Writer, apages, make_writer

__all__ = ["ExportController"]

Who = NamedDependency[Principal]
Format = Literal["ndjson", "csv", "parquet"]
_EXT = {"ndjson": "ndjson", "csv": "csv", "parquet": "parquet"}


class ParquetUnavailable(ApiError):
    """The server has no pyarrow: Parquet cannot be produced here."""

    status, title, slug = 501, "Not Implemented", "parquet-unavailable"


def _writer(kind: str, fmt: str) -> Writer:
    try:
        return make_writer(kind, fmt)
    except ExportError as exc:
        raise ParquetUnavailable(f"{exc.message}; the server operator can {PARQUET_HINT}") from exc


def _window(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since >= until:
        raise Unprocessable(
            "since must be before until",
            errors=[{"pointer": "/query/since", "message": "must be before until"}],
        )


def _stream(
    request: Request[Any, Any, Any],
    principal: Principal,
    kind: str,
    fmt: str,
    since: datetime | None,
    until: datetime | None,
) -> Stream:
    _window(since, until)
    writer = _writer(kind, fmt)  # before the stream starts: a 501 is still possible
    pool: AsyncConnectionPool[AsyncConnection[Any]] = request.app.state.pool
    tenant = principal.tenant_filter()

    async def body() -> AsyncIterator[bytes]:
        async with pool.connection() as conn:
            async with conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                async for page in apages(conn, kind, since=since, until=until, tenant=tenant):
                    chunk = writer.write(page)
                    if chunk:
                        yield chunk
            last = writer.close()
            if last:
                yield last

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Stream(
        body(),
        media_type=MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="whk-{kind}-{stamp}.{_EXT[fmt]}"'},
    )


@dataclass
class _ExportOperation(Operation):
    """The download is NDJSON, CSV or Parquet by ``format``: document the three bodies."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse):
            text = Schema(type=OpenAPIType.STRING)
            ok.content = {
                # A JSON object per line: no one schema describes the whole body.
                "application/x-ndjson": OpenAPIMediaType(),
                "text/csv": OpenAPIMediaType(schema=text),
                "application/vnd.apache.parquet": OpenAPIMediaType(
                    schema=Schema(type=OpenAPIType.STRING, content_media_type="application/octet-stream")
                ),
            }


class ExportController(Controller):
    path = "/api/whk/exports"
    tags = ["exports"]  # noqa: RUF012

    @get(
        "/deliveries",
        operation_id="exportDeliveries",
        summary="Download delivery history (NDJSON, CSV or Parquet), streamed, oldest first",
        operation_class=_ExportOperation,
        responses=problem_responses(400, 401, 403, 422, 429, 501),
    )
    async def export_deliveries(
        self,
        request: Request[Any, Any, Any],
        principal: Who,
        since: Annotated[datetime | None, QueryParameter(description="created at or after")] = None,
        until: Annotated[datetime | None, QueryParameter(description="created before")] = None,
        format: Annotated[Format, QueryParameter()] = "ndjson",
    ) -> Stream:
        return _stream(request, principal, "deliveries", format, since, until)

    @get(
        "/events",
        operation_id="exportEvents",
        summary="Download event history (NDJSON, CSV or Parquet), streamed, oldest first",
        operation_class=_ExportOperation,
        responses=problem_responses(400, 401, 403, 422, 429, 501),
    )
    async def export_events(
        self,
        request: Request[Any, Any, Any],
        principal: Who,
        since: Annotated[datetime | None, QueryParameter(description="created at or after")] = None,
        until: Annotated[datetime | None, QueryParameter(description="created before")] = None,
        format: Annotated[Format, QueryParameter()] = "ndjson",
    ) -> Stream:
        return _stream(request, principal, "events", format, since, until)
