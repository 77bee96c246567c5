"""Audit trail: one row per mutation, in the mutation's own transaction, secrets removed.

``AuditLog.record`` is what every mutating handler calls with the request's ``conn`` (see ``api.deps``):
the row commits or rolls back with the change. The same method serves the CLI's synchronous connection
(``whk apikey create``): with an ``AsyncConnection`` it returns an awaitable, with a ``Connection`` it runs
at once. ``AuditLog.page`` is behind ``GET /api/whk/security/audit`` (tenancy applied here, filters bound
as parameters). An ``AuditLog`` holds its loaded queries; controllers keep one like their repository.

Secret removal (``redact``): any key that looks like a credential (secret, password, token, api_key,
credential, authorization, ``*_enc``, ``*_hash``) has its value replaced by ``"[redacted]"``, any string
that looks like a signing secret (``whsec_…``) or an API key (``whk_…_…``) anywhere in the document
likewise, and bytes are never stored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol, TypeVar

import msgspec
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from api.deps import Principal
from whk.sqlfiles import load_queries

__all__ = ["REDACTED", "AuditFilter", "AuditLog", "AuditRow", "redact"]

REDACTED = "[redacted]"
R = TypeVar("R", covariant=True)


class _Executes(Protocol[R]):
    """A psycopg connection, sync (``execute`` runs) or async (``execute`` returns an awaitable)."""

    def execute(self, query: Any, params: Any = ..., /) -> R: ...


_SECRET_KEY = re.compile(
    r"(secret|password|passwd|token|api_?key|credential|authorization|private|_enc$|_hash$|^key$)",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(r"(whsec_[A-Za-z0-9+/=]{8,}|whk_[a-z0-9]{12}_[A-Za-z0-9_-]{16,}|Bearer\s+\S+)")


def redact(value: Any) -> Any:
    """A copy of ``value`` (JSON-like) with secrets removed."""
    if isinstance(value, Mapping):
        return {
            str(k): (REDACTED if _SECRET_KEY.search(str(k)) and v is not None else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return REDACTED
    if isinstance(value, str):
        return _SECRET_VALUE.sub(REDACTED, value)
    if isinstance(value, msgspec.Struct):
        return redact(msgspec.to_builtins(value))
    if isinstance(value, datetime):
        return value.isoformat()
    return value


class AuditFilter(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Filters of the audit endpoint; every field optional. ``action`` ending in ``.*`` matches a prefix."""

    consumer_id: int | None = None
    actor: str | None = None
    action: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    request_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_id: int | None = None  # keyset cursor: rows with a smaller id
    limit: int = 50


class AuditRow(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    occurred_at: datetime
    actor: str
    consumer_id: int | None
    action: str
    target_type: str
    target_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None
    source_ip: str | None


class AuditLog:
    """Writes and reads the audit trail (queries of audit.sql, loaded once per instance)."""

    def __init__(self) -> None:
        self._q = load_queries("api", "audit.sql")

    def record(
        self,
        conn: _Executes[R],
        principal: Principal,
        action: str,
        target_type: str,
        target_id: str | int | None,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        *,
        consumer_id: int | None = None,
    ) -> R:
        """Append one audit row in ``conn``'s current transaction (await it on an async connection).

        ``action`` is dotted (``webhook.create``, ``webhook.secret_rotate``); ``consumer_id`` is the
        tenant the row belongs to (default: ``after``/``before``'s ``consumer_id``, else the principal's).
        """
        if consumer_id is None:
            for doc in (after, before):
                found = doc.get("consumer_id") if doc else None
                if isinstance(found, int) and not isinstance(found, bool):
                    consumer_id = found
                    break
            else:
                consumer_id = principal.consumer_id
        params = {
            "actor": principal.actor,
            "consumer_id": consumer_id,
            "action": action,
            "target_type": target_type,
            "target_id": None if target_id is None else str(target_id),
            "before": None if before is None else Jsonb(redact(before)),
            "after": None if after is None else Jsonb(redact(after)),
            "request_id": principal.request_id,
            "source_ip": principal.source_ip or None,
        }
        return conn.execute(self._q["insert_audit"], params)

    async def page(
        self, conn: AsyncConnection[Any], principal: Principal, flt: AuditFilter
    ) -> list[AuditRow]:
        """One keyset page of audit rows visible to ``principal`` (a consumer sees only its own rows)."""
        action, action_prefix = flt.action, None
        if action is not None and action.endswith(".*"):
            action_prefix = action[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            action = action[:-2]
        params = {
            "tenant": principal.tenant_filter(),
            "consumer_id": flt.consumer_id,
            "actor": flt.actor,
            "action": action,
            "action_prefix": action_prefix,
            "target_type": flt.target_type,
            "target_id": flt.target_id,
            "request_id": flt.request_id,
            "since": flt.since,
            "until": flt.until,
            "before_id": flt.before_id,
            "limit": max(1, min(flt.limit, 500)),
        }
        cur = await conn.execute(self._q["list_audit"], params)
        cols = [c.name for c in cur.description or ()]
        return [AuditRow(**dict(zip(cols, row, strict=True))) for row in await cur.fetchall()]
