"""Run a composed query and convert its rows into msgspec Structs (the only row mapping the API uses)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import msgspec
import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from api.errors import Unprocessable

__all__ = [
    "Query",
    "execute",
    "fetch_all",
    "fetch_column",
    "fetch_one",
    "fetch_value",
    "jsonb_params",
]

T = TypeVar("T")
Query = str | sql.Composable
# Text PostgreSQL cannot store: NUL characters (refused by psycopg before sending, no SQLSTATE) and
# untranslatable / invalid byte sequences. They come from the client, so they are a 422 (valid JSON
# strings the database refuses), not a 500.
_BAD_TEXT_STATES = frozenset({"22P05", "22021"})


@asynccontextmanager
async def _run(
    conn: AsyncConnection[Any], query: Query, params: Mapping[str, Any], row_factory: Any = None
) -> AsyncIterator[Any]:
    cursor = conn.cursor(row_factory=row_factory) if row_factory is not None else conn.cursor()
    async with cursor as cur:
        try:
            await cur.execute(query, params)  # type: ignore[arg-type]
        except psycopg.DataError as exc:
            if exc.sqlstate is None or exc.sqlstate in _BAD_TEXT_STATES:
                message = "a text value contains a NUL character or an invalid byte sequence"
                raise Unprocessable(message) from exc
            raise
        yield cur


async def fetch_all(
    conn: AsyncConnection[Any], query: Query, params: Mapping[str, Any], type_: type[T]
) -> list[T]:
    async with _run(conn, query, params, dict_row) as cur:
        rows = await cur.fetchall()
    return [msgspec.convert(r, type_) for r in rows]


async def fetch_one(
    conn: AsyncConnection[Any], query: Query, params: Mapping[str, Any], type_: type[T]
) -> T | None:
    async with _run(conn, query, params, dict_row) as cur:
        row = await cur.fetchone()
    return None if row is None else msgspec.convert(row, type_)


async def fetch_value(conn: AsyncConnection[Any], query: Query, params: Mapping[str, Any]) -> Any:
    """The first column of the first row (None when there is no row)."""
    async with _run(conn, query, params) as cur:
        row = await cur.fetchone()
    return None if row is None else row[0]


async def fetch_column(conn: AsyncConnection[Any], query: Query, params: Mapping[str, Any]) -> list[Any]:
    """The first column of every row."""
    async with _run(conn, query, params) as cur:
        return [r[0] for r in await cur.fetchall()]


async def execute(conn: AsyncConnection[Any], query: Query, params: Mapping[str, Any]) -> int:
    """Run a statement; the affected row count."""
    async with _run(conn, query, params) as cur:
        return int(cur.rowcount)


def jsonb_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with dict values wrapped so psycopg sends them as jsonb (lists stay arrays)."""
    return {k: Jsonb(v) if isinstance(v, dict) else v for k, v in params.items()}
