"""Event catalog, triggers, history and volume statistics (blocks in queries.sql).

Registration and emission go through the capture side's SQL API (``whk.register_event_type``,
``whk.emit``): the API never writes the catalog or the outbox by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb

from api import listing
from api.events.schemas import (
    EventCounters,
    EventTransform,
    EventType,
    HistoryEvent,
    SchemaVersion,
    VolumeBucket,
)
from api.rows import fetch_all, fetch_one, fetch_value
from whk.sqlfiles import load_queries

__all__ = ["HISTORY_FILTERS", "HISTORY_SORTS", "TYPE_FILTERS", "TYPE_SORTS", "EventRepository"]

TYPE_FILTERS = (
    listing.FilterSpec("category", "e.category"),
    listing.FilterSpec("prefix", "e.name", op="prefix"),
    listing.FilterSpec("strict", "e.strict"),
)
TYPE_SORTS = (
    listing.SortSpec("name", "e.name", "e.id", "text"),
    listing.SortSpec("fire_count", "e.fire_count", "e.id", "bigint"),
    listing.SortSpec("created_at", "e.created_at", "e.id", "timestamptz"),
)
HISTORY_FILTERS = (
    listing.FilterSpec("event_type", "o.event_type"),
    listing.FilterSpec("event_key", "o.event_key"),
    listing.FilterSpec("operation", "o.operation"),
    listing.FilterSpec("status", "o.status"),
    listing.FilterSpec("since", "o.created_at", op=">=", cast="timestamptz"),
    listing.FilterSpec("until", "o.created_at", op="<", cast="timestamptz"),
)
HISTORY_SORTS = (listing.SortSpec("created_at", "o.created_at", "o.id", "timestamptz"),)


# The tenant's history is read from its deliveries (see history_tenant in queries.sql); what only the
# outbox row holds is compared through a correlated sub-select written here (never from a request).
TENANT_HISTORY_FILTERS = (
    listing.FilterSpec("event_type", "d.event_type"),
    listing.FilterSpec(
        "event_key",
        "o2.event_key",
        expr=(
            "(SELECT o2.event_key FROM whk.outbox o2"
            " WHERE o2.id = d.outbox_id AND o2.created_at = d.event_created_at)"
        ),
    ),
    listing.FilterSpec(
        "operation",
        "o2.operation",
        expr=(
            "(SELECT o2.operation FROM whk.outbox o2"
            " WHERE o2.id = d.outbox_id AND o2.created_at = d.event_created_at)"
        ),
    ),
    listing.FilterSpec(
        "status",
        "o2.status",
        expr=(
            "(SELECT o2.status FROM whk.outbox o2"
            " WHERE o2.id = d.outbox_id AND o2.created_at = d.event_created_at)"
        ),
    ),
    listing.FilterSpec("since", "d.event_created_at", op=">=", cast="timestamptz"),
    listing.FilterSpec("until", "d.event_created_at", op="<", cast="timestamptz"),
)
TENANT_HISTORY_SORTS = (
    listing.SortSpec(
        "created_at", "d.event_created_at", "d.outbox_id", "timestamptz", attr="created_at", tie_attr="id"
    ),
)


class _Schema(msgspec.Struct):
    major: int
    minor: int
    schema: dict[str, Any]


class _AdminCounters(msgspec.Struct):
    events_24h: int
    events_7d: int
    pending_routing: int
    invalid: int


class _StatusCount(msgspec.Struct):
    status: str
    n: int


class EventRepository:
    def __init__(self) -> None:
        self._q = load_queries(__package__ or "api.events", "queries.sql")
        self.types = listing.Listing(self._q["list_types"], EventType, TYPE_FILTERS, TYPE_SORTS)
        self._history_admin = listing.Listing(
            self._q["history_admin"], HistoryEvent, HISTORY_FILTERS, HISTORY_SORTS
        )
        # the tenant's history starts from its deliveries (the query takes %(tenant)s itself)
        self._history_tenant = listing.Listing(
            self._q["history_tenant"], HistoryEvent, TENANT_HISTORY_FILTERS, TENANT_HISTORY_SORTS
        )

    async def get_type(self, conn: AsyncConnection[Any], name: str) -> EventType | None:
        return await fetch_one(conn, self._q["get_type"], {"name": name}, EventType)

    async def versions(self, conn: AsyncConnection[Any], type_id: int) -> list[SchemaVersion]:
        return await fetch_all(conn, self._q["type_versions"], {"id": type_id}, SchemaVersion)

    async def transforms(self, conn: AsyncConnection[Any], type_id: int) -> list[EventTransform]:
        return await fetch_all(conn, self._q["type_transforms"], {"id": type_id}, EventTransform)

    async def schema(
        self, conn: AsyncConnection[Any], name: str, major: int | None = None
    ) -> tuple[str, dict[str, Any]] | None:
        """(``major.minor``, schema) payloads of ``name`` are validated against, or None."""
        row = await fetch_one(conn, self._q["type_schema"], {"name": name, "major": major}, _Schema)
        return None if row is None else (f"{row.major}.{row.minor}", row.schema)

    async def counters(
        self, conn: AsyncConnection[Any], etype: EventType, tenant: int | None
    ) -> EventCounters:
        admin = None
        if tenant is None:
            admin = await fetch_one(
                conn, self._q["type_counters_admin"], {"name": etype.name}, _AdminCounters
            )
        by_status = await fetch_all(
            conn, self._q["type_delivery_counters"], {"name": etype.name, "tenant": tenant}, _StatusCount
        )
        subscribers = await fetch_value(
            conn, self._q["type_subscribers"], {"name": etype.name, "tenant": tenant}
        )
        return EventCounters(
            fire_count=etype.fire_count,
            last_fired_at=etype.last_fired_at,
            events_24h=None if admin is None else admin.events_24h,
            events_7d=None if admin is None else admin.events_7d,
            pending_routing=None if admin is None else admin.pending_routing,
            invalid=None if admin is None else admin.invalid,
            subscribed_webhooks=int(subscribers or 0),
            deliveries={r.status: r.n for r in by_status},
        )

    async def register(
        self,
        conn: AsyncConnection[Any],
        *,
        name: str,
        schema: dict[str, Any],
        description: str | None,
        strict: bool | None,
        new_major: bool,
        category: str | None,
        changelog: str | None,
        force: bool = False,
    ) -> str:
        """The resulting version ``major.minor``; raises psycopg.Error with PostgreSQL's explanation.

        Runs in a savepoint so a refusal leaves the request's transaction usable for the 4xx answer.
        """
        async with conn.transaction():
            return str(
                await fetch_value(
                    conn,
                    self._q["register_type"],
                    {
                        "name": name,
                        "schema": Jsonb(schema),
                        "description": description,
                        "strict": strict,
                        "new_major": new_major,
                        "force": force,
                        "category": category,
                        "changelog": changelog,
                    },
                )
            )

    async def emit(
        self,
        conn: AsyncConnection[Any],
        *,
        etype: str,
        data: dict[str, Any],
        key: str | None,
        deliver_at: datetime | None,
    ) -> UUID:
        async with conn.transaction():
            value = await fetch_value(
                conn,
                self._q["emit"],
                {"type": etype, "data": Jsonb(data), "key": key, "deliver_at": deliver_at},
            )
        return value if isinstance(value, UUID) else UUID(str(value))

    async def history(
        self,
        conn: AsyncConnection[Any],
        *,
        tenant: int | None,
        filters: Mapping[str, Any],
        sort: str,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[HistoryEvent], str | None]:
        if tenant is None:
            return await self._history_admin.page(
                conn, filters=filters, sort=sort, cursor=cursor, limit=limit
            )
        direction = sql.SQL("DESC" if sort.startswith("-") else "ASC")
        return await self._history_tenant.page(
            conn,
            filters=filters,
            sort=sort,
            cursor=cursor,
            limit=limit,
            params={"tenant": tenant},
            outer_order=sql.SQL("x.event_created_at {d}, x.outbox_id {d}").format(d=direction),
        )

    async def volume(
        self,
        conn: AsyncConnection[Any],
        *,
        tenant: int | None,
        bucket: str,
        since: datetime,
        until: datetime,
        event_type: str | None,
    ) -> list[VolumeBucket]:
        name = "stats_admin" if tenant is None else "stats_tenant"
        params = {"tenant": tenant, "bucket": bucket, "since": since, "until": until, "type": event_type}
        return await fetch_all(conn, self._q[name], params, VolumeBucket)
