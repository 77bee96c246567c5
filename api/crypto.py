"""The API's view of the secret box (``whk.secretbox``), which the dispatcher shares.

The app builds one ``SecretBox`` at start-up (``app.state.secretbox``); controllers get it as the
``secretbox`` dependency, or call the helpers below with it. Associated data is the row identity, so
callers reserve the row id first, e.g. for a new signing secret::

    row_id = await next_id(conn, "webhook_secrets")
    blob = box.encrypt(secret.encode(), row_id=row_aad("webhook_secrets", row_id))
    INSERT INTO whk.webhook_secrets (id, ...) OVERRIDING SYSTEM VALUE VALUES (%(id)s, ...)
"""

from __future__ import annotations

from typing import Any

from litestar.datastructures import State
from psycopg import AsyncConnection, sql

from whk.secretbox import ENCRYPTED_COLUMNS, SecretBox, SecretDecryptError, row_aad

__all__ = ["SecretBox", "SecretDecryptError", "next_id", "provide_secretbox", "row_aad"]

_TABLES = frozenset(t for t, _, _ in ENCRYPTED_COLUMNS)


async def next_id(conn: AsyncConnection[Any], table: str) -> int:
    """Reserve the next identity value of ``whk.<table>`` (an encrypted-column table) before inserting."""
    if table not in _TABLES:
        raise ValueError(f"{table} has no encrypted column")
    cur = await conn.execute(
        sql.SQL("SELECT nextval(pg_get_serial_sequence({}, 'id'))").format(sql.Literal(f"whk.{table}"))
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def provide_secretbox(state: State) -> SecretBox:
    box: SecretBox = state.secretbox
    return box
