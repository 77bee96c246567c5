"""Signing-key rotation and listing (blocks in queries.sql); new secrets are created through the
webhook repository so there is one place that seals them."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from api.rows import fetch_all, fetch_column, fetch_value
from api.security.schemas import SigningKeyInfo
from whk.sqlfiles import load_queries

__all__ = ["SecurityRepository"]


class SecurityRepository:
    def __init__(self) -> None:
        self._q = load_queries(__package__ or "api.security", "queries.sql")

    async def keys(
        self,
        conn: AsyncConnection[Any],
        *,
        tenant: int | None,
        webhook_id: int | None,
        include_expired: bool,
        limit: int,
    ) -> list[SigningKeyInfo]:
        params = {
            "tenant": tenant,
            "webhook_id": webhook_id,
            "include_expired": include_expired,
            "limit": limit,
        }
        return await fetch_all(conn, self._q["list_keys"], params, SigningKeyInfo)

    async def setting(self, conn: AsyncConnection[Any], key: str, default: float) -> float:
        value = await fetch_value(conn, self._q["security_setting"], {"key": key})
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default

    async def start_grace(self, conn: AsyncConnection[Any], webhook_id: int, grace_s: float) -> list[str]:
        return [
            str(k)
            for k in await fetch_column(
                conn, self._q["start_grace"], {"webhook_id": webhook_id, "grace_s": grace_s}
            )
        ]

    async def cap_old_keys(self, conn: AsyncConnection[Any], webhook_id: int, max_old: int) -> list[str]:
        return [
            str(k)
            for k in await fetch_column(
                conn, self._q["cap_old_keys"], {"webhook_id": webhook_id, "max_old": max_old}
            )
        ]
