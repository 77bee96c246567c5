"""Database access shared by the API, the dispatcher and the CLI.

Connections get msgspec-backed JSON adapters (per connection, no global state). Driver errors are
wrapped at this boundary: an unreachable DSN becomes ``DatabaseUnavailable`` with a hint, a schema at
another version ``SchemaVersionMismatch`` naming both versions.
"""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg
from psycopg.abc import AdaptContext
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool

from whk.errors import DatabaseUnavailable, SchemaVersionMismatch
from whk.migrate import code_version
from whk.settings import Settings

_SCHEMA_VERSION_SQL = (
    "SELECT CASE WHEN to_regclass('whk.schema_migrations') IS NULL THEN 0 "
    "ELSE (SELECT coalesce(max(version), 0) FROM whk.schema_migrations) END"
)


def _json_dumps(obj: Any) -> bytes:
    return msgspec.json.encode(obj)


def configure_json(context: AdaptContext) -> None:
    """Use msgspec for json/jsonb on ``context`` (a connection or a pool's connections)."""
    set_json_dumps(_json_dumps, context=context)
    set_json_loads(msgspec.json.decode, context=context)


def require_dsn(settings: Settings) -> str:
    if not settings.core.database_url:
        raise DatabaseUnavailable(
            "WHK_DATABASE_URL is not set",
            hint="set it, or use `whk up`, which starts a private PostgreSQL when it is unset",
        )
    return settings.core.database_url


def _unavailable(dsn: str, exc: Exception) -> DatabaseUnavailable:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    mask = "***"  # the password is never echoed
    safe = psycopg.conninfo.make_conninfo(dsn, password=mask) if "password" in dsn else dsn
    return DatabaseUnavailable(
        f"cannot connect to PostgreSQL at {safe}: {first}",
        hint="check WHK_DATABASE_URL and that the server is running",
    )


def connect(settings: Settings, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    dsn = require_dsn(settings)
    try:
        conn = psycopg.connect(
            dsn, autocommit=autocommit, connect_timeout=max(1, round(settings.core.connect_timeout))
        )
    except psycopg.OperationalError as exc:
        raise _unavailable(dsn, exc) from exc
    configure_json(conn)
    return conn


async def aconnect(settings: Settings, *, autocommit: bool = True) -> psycopg.AsyncConnection[Any]:
    dsn = require_dsn(settings)
    try:
        conn = await psycopg.AsyncConnection.connect(
            dsn, autocommit=autocommit, connect_timeout=max(1, round(settings.core.connect_timeout))
        )
    except psycopg.OperationalError as exc:
        raise _unavailable(dsn, exc) from exc
    configure_json(conn)
    return conn


def _check(found: int, expected: int | None) -> None:
    expected = code_version() if expected is None else expected
    if found != expected:
        raise SchemaVersionMismatch(database=found, code=expected)


def check_schema_version(conn: psycopg.Connection[Any], expected: int | None = None) -> None:
    """Refuse to run against a schema older or newer than the migrations this code ships."""
    row = conn.execute(_SCHEMA_VERSION_SQL).fetchone()
    _check(int(row[0]) if row else 0, expected)


async def acheck_schema_version(conn: psycopg.AsyncConnection[Any], expected: int | None = None) -> None:
    cur = await conn.execute(_SCHEMA_VERSION_SQL)
    row = await cur.fetchone()
    _check(int(row[0]) if row else 0, expected)


async def open_pool(
    settings: Settings, *, name: str = "whk", autocommit: bool = False
) -> AsyncConnectionPool[Any]:
    """An opened async pool with JSON adapters; waits for the first connection or raises.

    ``autocommit`` suits callers whose every call is one statement (the dispatcher's SQL functions): no
    BEGIN/COMMIT round trips around each of them."""
    dsn = require_dsn(settings)

    async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
        configure_json(conn)

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        dsn,
        min_size=settings.core.pool_min_size,
        max_size=settings.core.pool_max_size,
        configure=_configure,
        kwargs={"autocommit": autocommit},
        name=name,
        open=False,
        timeout=settings.core.connect_timeout,
    )
    try:
        await pool.open(wait=True, timeout=settings.core.connect_timeout)
    except Exception as exc:
        await pool.close()
        raise _unavailable(dsn, exc) from exc
    return pool
