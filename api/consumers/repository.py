"""Consumer persistence (blocks in queries.sql); ``tenant`` limits a consumer credential to its own row."""

from __future__ import annotations

from typing import Any

import msgspec
from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb

from api import listing
from api.consumers.schemas import Consumer, ConsumerCreate, ConsumerUpdate, QuietHours
from api.rows import execute, fetch_one, fetch_value, jsonb_params
from whk.sqlfiles import load_queries

__all__ = ["CONSUMER_FILTERS", "CONSUMER_SORTS", "ConsumerRepository"]

CONSUMER_FILTERS = (
    listing.FilterSpec("status", "a.status"),
    listing.FilterSpec("name_prefix", "a.name", op="prefix"),
)
CONSUMER_SORTS = (
    listing.SortSpec("id", "a.id", "a.id", "bigint"),
    listing.SortSpec("name", "a.name", "a.id", "text"),
    listing.SortSpec("created_at", "a.created_at", "a.id", "timestamptz"),
)
_FIELDS = tuple(f for f in ConsumerCreate.__struct_fields__)


def _plain(value: Any) -> Any:
    """A nested Struct (quiet_hours) as the JSON object the column stores."""
    return Jsonb(msgspec.to_builtins(value)) if isinstance(value, msgspec.Struct) else value


class ConsumerRepository:
    def __init__(self) -> None:
        q = load_queries(__package__ or "api.consumers", "queries.sql")
        self._q = q
        self._cols = sql.SQL(q["consumer_columns"])
        self._get = sql.SQL(q["get_consumer"]).format(columns=self._cols)
        self._lock = sql.SQL(q["lock_consumer"]).format(columns=self._cols)
        self.listing = listing.Listing(
            q["list_consumers"],
            Consumer,
            CONSUMER_FILTERS,
            CONSUMER_SORTS,
            tenant_column="a.id",
            fragments={"columns": self._cols},
        )

    async def get(
        self, conn: AsyncConnection[Any], *, tenant: int | None, consumer_id: int, lock: bool = False
    ) -> Consumer | None:
        return await fetch_one(
            conn, self._lock if lock else self._get, {"id": consumer_id, "tenant": tenant}, Consumer
        )

    async def create(self, conn: AsyncConnection[Any], data: ConsumerCreate) -> int:
        params = {f: _plain(getattr(data, f)) for f in _FIELDS}
        return int(await fetch_value(conn, self._q["insert_consumer"], jsonb_params(params)))

    async def update(self, conn: AsyncConnection[Any], consumer_id: int, data: ConsumerUpdate) -> None:
        assignments: list[sql.Composable] = []
        params: dict[str, Any] = {"id": consumer_id}
        for f in _FIELDS:
            value = getattr(data, f)
            if value is msgspec.UNSET:
                continue
            if f == "status":
                # Not a plain column write: whk.set_consumer_status parks or releases the deliveries.
                await fetch_value(conn, self._q["set_consumer_status"], {"id": consumer_id, "status": value})
                continue
            params[f] = _plain(value)
            placeholder: sql.Composable = sql.Placeholder(f)
            if f == "allowed_ips":
                placeholder = sql.SQL("{}::cidr[]").format(placeholder)
            assignments.append(sql.SQL("{} = {}").format(sql.Identifier(f), placeholder))
        if assignments:
            query = sql.SQL(self._q["update_consumer"]).format(assignments=sql.SQL(", ").join(assignments))
            await execute(conn, query, jsonb_params(params))

    async def quiet_hours_problem(self, conn: AsyncConnection[Any], quiet_hours: QuietHours) -> str | None:
        """Why the database refuses these quiet hours ("/member: message"), or None."""
        value = await fetch_value(
            conn, self._q["quiet_hours_problem"], {"quiet_hours": Jsonb(msgspec.to_builtins(quiet_hours))}
        )
        return None if value is None else str(value)

    async def references(self, conn: AsyncConnection[Any], consumer_id: int) -> int:
        return int(await fetch_value(conn, self._q["consumer_references"], {"id": consumer_id}))

    async def delete(self, conn: AsyncConnection[Any], consumer_id: int) -> None:
        await execute(conn, self._q["delete_consumer"], {"id": consumer_id})
