"""``/api/whk/events``: the event type catalog, registration/versioning, custom triggers, history and
volume statistics.

The catalog is shared (every credential may read it); registering types and triggering events affect
every tenant, so they are admin operations. History and statistics are tenant-scoped: a consumer sees
the events routed to its own webhooks.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import psycopg
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_201_CREATED
from psycopg import AsyncConnection

from api.audit import AuditLog
from api.deps import Principal, admin_only
from api.errors import NotFound, Unprocessable
from api.events.repository import EventRepository
from api.events.schemas import (
    EventStats,
    EventTypeDetail,
    EventTypePage,
    EventTypeRegister,
    EventTypeRegistered,
    HistoryPage,
    TriggerRequest,
    TriggerResult,
)
from api.events.validation import compile_error, schema_errors
from api.shapes import EVENT_TYPE_RE, CursorQ, LimitQ

__all__ = ["EventController"]

Conn = NamedDependency[AsyncConnection[Any]]
Who = NamedDependency[Principal]
_TYPE = re.compile(EVENT_TYPE_RE)


def _pg_problem(exc: psycopg.Error, pointer: str) -> Unprocessable:
    """PostgreSQL's own explanation (primary message and hint), never SQL text or a traceback."""
    message = exc.diag.message_primary or "refused by the database"
    hint = exc.diag.message_hint
    return Unprocessable(
        message, errors=[{"pointer": pointer, "message": message + (f" ({hint})" if hint else "")}]
    )


class EventController(Controller):
    path = "/api/whk/events"
    tags = ["events"]  # noqa: RUF012 - Litestar reads a class attribute

    def __init__(self, owner: Any) -> None:
        super().__init__(owner)
        self.repo = EventRepository()
        self.audit_log = AuditLog()

    @get("/", operation_id="listEventTypes", summary="List event types")
    async def list_types(
        self,
        conn: Conn,
        category: Annotated[str | None, QueryParameter(max_length=100)] = None,
        prefix: Annotated[str | None, QueryParameter(max_length=200)] = None,
        strict: Annotated[bool | None, QueryParameter()] = None,
        sort: Annotated[
            Literal["name", "-name", "fire_count", "-fire_count", "created_at", "-created_at"],
            QueryParameter(),
        ] = "name",
        cursor: CursorQ = None,
        limit: LimitQ = 100,
    ) -> EventTypePage:
        items, nxt = await self.repo.types.page(
            conn,
            filters={"category": category, "prefix": prefix, "strict": strict},
            sort=sort,
            cursor=cursor,
            limit=limit,
        )
        return EventTypePage(items=items, next_cursor=nxt)

    @post(
        "/",
        operation_id="registerEventType",
        summary="Register an event type or publish a new schema version (admin)",
        guards=[admin_only],
        status_code=HTTP_201_CREATED,
    )
    async def register_type(
        self, conn: Conn, principal: Who, data: JSONBody[EventTypeRegister]
    ) -> EventTypeRegistered:
        before = await self.repo.get_type(conn, data.name)
        problem = compile_error(data.schema)
        if problem is not None:
            raise Unprocessable(
                "the schema is not valid JSON Schema", errors=[{"pointer": "/schema", "message": problem}]
            )
        try:
            version = await self.repo.register(
                conn,
                name=data.name,
                schema=data.schema,
                description=data.description,
                strict=data.strict,
                new_major=data.new_major,
                force=data.force,
                category=data.category,
                changelog=data.changelog,
            )
        except psycopg.Error as exc:
            raise _pg_problem(exc, "/schema") from exc
        previous = None if before is None else f"{before.current_major}.{before.current_minor}"
        if version != previous:
            await self.audit_log.record(
                conn,
                principal,
                "event_type.register" if before is None else "event_type.version",
                "event_type",
                data.name,
                None if before is None else {"version": previous},
                {
                    "version": version,
                    "schema": data.schema,
                    "strict": data.strict,
                    "description": data.description,
                },
            )
        return EventTypeRegistered(name=data.name, version=version, created=before is None)

    @post(
        "/trigger",
        operation_id="triggerEvent",
        summary="Emit a custom event through whk.emit (admin)",
        guards=[admin_only],
        status_code=HTTP_201_CREATED,
    )
    async def trigger(self, conn: Conn, principal: Who, data: JSONBody[TriggerRequest]) -> TriggerResult:
        found = await self.repo.schema(conn, data.type)
        if found is None:
            raise Unprocessable(
                f"unknown event type {data.type!r}",
                errors=[{"pointer": "/type", "message": "register the type first (POST /api/whk/events)"}],
            )
        version, schema = found
        errors = schema_errors(schema, data.data, prefix="/data")
        if errors:
            raise Unprocessable(f"data does not match the schema of {data.type} {version}", errors=errors)
        try:
            event_id = await self.repo.emit(
                conn, etype=data.type, data=data.data, key=data.key, deliver_at=data.deliver_at
            )
        except psycopg.Error as exc:
            raise _pg_problem(exc, "/data") from exc
        await self.audit_log.record(
            conn,
            principal,
            "event.trigger",
            "event",
            str(event_id),
            None,
            {"type": data.type, "version": version, "key": data.key, "data": data.data},
        )
        return TriggerResult(
            event_id=str(event_id), type=data.type, version=version, deliver_at=data.deliver_at
        )

    @get("/history", operation_id="eventHistory", summary="Events emitted or captured, newest first")
    async def history(
        self,
        conn: Conn,
        principal: Who,
        event_type: Annotated[str | None, QueryParameter(pattern=EVENT_TYPE_RE, max_length=200)] = None,
        event_key: Annotated[str | None, QueryParameter(max_length=500)] = None,
        operation: Annotated[Literal["INSERT", "UPDATE", "DELETE", "EMIT"] | None, QueryParameter()] = None,
        status: Annotated[Literal["pending", "routed", "invalid"] | None, QueryParameter()] = None,
        since: Annotated[datetime | None, QueryParameter()] = None,
        until: Annotated[datetime | None, QueryParameter()] = None,
        sort: Annotated[Literal["-created_at", "created_at"], QueryParameter()] = "-created_at",
        cursor: CursorQ = None,
        limit: LimitQ = 50,
    ) -> HistoryPage:
        filters = {
            "event_type": event_type,
            "event_key": event_key,
            "operation": operation,
            "status": status,
            "since": since,
            "until": until,
        }
        items, nxt = await self.repo.history(
            conn, tenant=principal.tenant_filter(), filters=filters, sort=sort, cursor=cursor, limit=limit
        )
        return HistoryPage(items=items, next_cursor=nxt)

    @get("/stats", operation_id="eventStats", summary="Event volume per type per hour or day")
    async def stats(
        self,
        conn: Conn,
        principal: Who,
        interval: Annotated[Literal["hour", "day"], QueryParameter()] = "hour",
        since: Annotated[datetime | None, QueryParameter()] = None,
        until: Annotated[datetime | None, QueryParameter()] = None,
        event_type: Annotated[str | None, QueryParameter(pattern=EVENT_TYPE_RE, max_length=200)] = None,
    ) -> EventStats:
        end = until or datetime.now(UTC)
        start = since or end - (timedelta(hours=24) if interval == "hour" else timedelta(days=30))
        if start >= end:
            raise Unprocessable(
                "since must be before until",
                errors=[{"pointer": "/query/since", "message": "must be before until"}],
            )
        limit = timedelta(days=31) if interval == "hour" else timedelta(days=731)
        if end - start > limit:
            message = f"at most {limit.days} days per request with interval={interval}"
            raise Unprocessable(message, errors=[{"pointer": "/query/since", "message": message}])
        buckets = await self.repo.volume(
            conn,
            tenant=principal.tenant_filter(),
            bucket=interval,
            since=start,
            until=end,
            event_type=event_type,
        )
        totals: dict[str, int] = {}
        for b in buckets:
            totals[b.event_type] = totals.get(b.event_type, 0) + b.events
        return EventStats(since=start, until=end, interval=interval, buckets=buckets, totals=totals)

    @get("/{event_type:str}", operation_id="getEventType", summary="Event type: versions, metadata, counters")
    async def get_type(self, conn: Conn, principal: Who, event_type: FromPath[str]) -> EventTypeDetail:
        if not _TYPE.match(event_type):
            raise NotFound(f"event type {event_type!r} not found")
        etype = await self.repo.get_type(conn, event_type)
        if etype is None:
            raise NotFound(f"event type {event_type!r} not found")
        versions = await self.repo.versions(conn, etype.id)
        transforms = await self.repo.transforms(conn, etype.id)
        counters = await self.repo.counters(conn, etype, principal.tenant_filter())
        return EventTypeDetail(
            type=etype,
            version=f"{etype.current_major}.{etype.current_minor}",
            versions=versions,
            transforms=transforms,
            counters=counters,
        )
