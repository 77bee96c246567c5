"""Webhook persistence: the only module of this package that runs SQL (blocks in queries.sql).

Every read and write takes ``tenant`` (None = admin): a consumer's query can never see or touch another
consumer's row. Signing secrets and outbound credentials go through the secret box (AES-GCM, row id as
associated data) before they reach the database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb

from api import listing
from api.rows import execute, fetch_all, fetch_one, fetch_value, jsonb_params
from api.webhooks.schemas import Attempt, Webhook, WebhookCreate, WebhookUpdate
from whk.secretbox import SecretBox, row_aad
from whk.sqlfiles import load_queries
from whk.webhook_secrets import aadd_secret

__all__ = [
    "ATTEMPT_FILTERS",
    "ATTEMPT_SORTS",
    "WEBHOOK_FILTERS",
    "WEBHOOK_SORTS",
    "SigningKey",
    "WebhookRepository",
]

WEBHOOK_FILTERS = (
    listing.FilterSpec("status", "w.status"),
    listing.FilterSpec("consumer_id", "w.consumer_id"),
    listing.FilterSpec("event_type", "w.event_types", op="contains"),
    listing.FilterSpec("name_prefix", "w.name", op="prefix"),
    listing.FilterSpec("delivery_mode", "w.delivery_mode"),
    listing.FilterSpec(
        "quarantined", "w.quarantined_at", cast="boolean", expr="(w.quarantined_at IS NOT NULL)"
    ),
    listing.FilterSpec("created_from", "w.created_at", op=">=", cast="timestamptz"),
    listing.FilterSpec("created_to", "w.created_at", op="<", cast="timestamptz"),
)
WEBHOOK_SORTS = (
    listing.SortSpec("id", "w.id", "w.id", "bigint"),
    listing.SortSpec("name", "w.name", "w.id", "text"),
    listing.SortSpec("created_at", "w.created_at", "w.id", "timestamptz"),
    listing.SortSpec("updated_at", "w.updated_at", "w.id", "timestamptz"),
)
ATTEMPT_FILTERS = (
    listing.FilterSpec("webhook_id", "t.webhook_id"),
    # A batch request is one attempt listing its members (delivery_ids): a delivery's filter finds it too.
    listing.FilterSpec(
        "delivery_id",
        "t.delivery_id",
        op="contains",
        expr="coalesce(t.delivery_ids, ARRAY[t.delivery_id])::text[]",
    ),
    listing.FilterSpec("outcome", "t.outcome"),
    listing.FilterSpec("status_code", "t.response_status"),
    listing.FilterSpec("error_class", "t.error_class"),
    listing.FilterSpec("started_from", "t.started_at", op=">=", cast="timestamptz"),
    listing.FilterSpec("started_to", "t.started_at", op="<", cast="timestamptz"),
)
ATTEMPT_SORTS = (listing.SortSpec("id", "t.id", "t.id", "bigint"),)

# Columns WebhookUpdate may set directly (everything else goes through functions or the secret box).
_PLAIN = (
    "name",
    "url",
    "event_types",
    "description",
    "http_method",
    "payload_version",
    "headers",
    "auth_type",
    "auth_header_name",
    "delivery_mode",
    "batch_size",
    "batch_window_ms",
    "delay_seconds",
    "supersede_by_key",
    "urgent",
    "timeout_ms",
    "rate_limit_per_second",
    "rate_limit_burst",
    "max_in_flight",
    "require_ack",
    "ack_timeout_seconds",
    "metadata",
)
_JSONPATH = ("filter", "ordering_key_path")
_JSONB_STRUCT = ("retry_policy", "breaker_config")


class SigningKey(msgspec.Struct, kw_only=True):
    """A signing key row (ciphertext still sealed)."""

    id: int
    key_id: str
    secret_enc: bytes
    created_at: datetime
    expires_at: datetime | None


class _Deleted(msgspec.Struct):
    deleted: bool
    cancelled: int


class WebhookRepository:
    """Queries of the webhook resource, composed once."""

    def __init__(self) -> None:
        q = load_queries(__package__ or "api.webhooks", "queries.sql")
        cols = sql.SQL(q["webhook_columns"])
        self._q = q
        self._get = sql.SQL(q["get_webhook"]).format(columns=cols)
        self._lock = sql.SQL(q["lock_webhook"]).format(columns=cols)
        self._cols = cols
        self.listing = listing.Listing(
            q["list_webhooks"],
            Webhook,
            WEBHOOK_FILTERS,
            WEBHOOK_SORTS,
            tenant_column="w.consumer_id",
            fragments={"columns": cols},
        )
        # the attempt log of one webhook: the controller checks the webhook is the caller's first
        self.attempt_log = listing.Listing(q["list_attempts"], Attempt, ATTEMPT_FILTERS, ATTEMPT_SORTS)

    # ----- reads
    async def get(
        self, conn: AsyncConnection[Any], *, tenant: int | None, webhook_id: int, lock: bool = False
    ) -> Webhook | None:
        return await fetch_one(
            conn, self._lock if lock else self._get, {"id": webhook_id, "tenant": tenant}, Webhook
        )

    async def consumer_exists(self, conn: AsyncConnection[Any], consumer_id: int) -> bool:
        return bool(await fetch_value(conn, self._q["consumer_exists"], {"id": consumer_id}))

    async def compile_jsonpath(self, conn: AsyncConnection[Any], expr: str) -> str:
        """PostgreSQL's normalised text of ``expr``; raises psycopg.Error with PostgreSQL's message.

        Runs in a savepoint so a syntax error leaves the request's transaction usable.
        """
        async with conn.transaction():
            return str(await fetch_value(conn, self._q["check_jsonpath"], {"expr": expr}))

    # ----- writes
    async def create(
        self, conn: AsyncConnection[Any], box: SecretBox, *, consumer_id: int, data: WebhookCreate
    ) -> tuple[int, str, str]:
        """Insert the webhook and its first signing key: (id, key_id, whsec_ secret)."""
        params = {f: getattr(data, f) for f in (*_PLAIN, *_JSONPATH, "status")}
        params["consumer_id"] = consumer_id
        for f in _JSONB_STRUCT:
            value = getattr(data, f)
            params[f] = None if value is None else msgspec.to_builtins(value)
        params = jsonb_params(params)
        webhook_id = int(await fetch_value(conn, self._q["insert_webhook"], params))
        if data.auth_credential is not None:
            await self.set_credential(conn, box, webhook_id, data.auth_credential)
        key_id, secret = await self.add_secret(conn, box, webhook_id)
        return webhook_id, key_id, secret

    async def set_credential(
        self, conn: AsyncConnection[Any], box: SecretBox, webhook_id: int, credential: str | None
    ) -> None:
        enc = (
            None
            if credential is None
            else box.encrypt(credential.encode(), row_id=row_aad("whk_01_webhooks", webhook_id))
        )
        await execute(conn, self._q["set_credential"], {"id": webhook_id, "enc": enc})

    async def credential(self, conn: AsyncConnection[Any], box: SecretBox, webhook_id: int) -> str | None:
        """The decrypted outbound credential (for the simulator only; never returned to clients)."""
        enc = await fetch_value(conn, self._q["get_credential"], {"id": webhook_id})
        if enc is None:
            return None
        return box.decrypt(bytes(enc), row_id=row_aad("whk_01_webhooks", webhook_id)).decode()

    async def update(
        self, conn: AsyncConnection[Any], box: SecretBox, *, webhook_id: int, data: WebhookUpdate
    ) -> None:
        """Apply the plain fields present in ``data`` (status and credential are handled separately)."""
        assignments: list[sql.Composable] = []
        params: dict[str, Any] = {"id": webhook_id}
        for f in _PLAIN + _JSONPATH + _JSONB_STRUCT:
            value = getattr(data, f)
            if value is msgspec.UNSET:
                continue
            if f in _JSONB_STRUCT and value is not None:
                value = msgspec.to_builtins(value)
            params[f] = value
            placeholder: sql.Composable = sql.Placeholder(f)
            if f in _JSONPATH:
                placeholder = sql.SQL("{}::jsonpath").format(placeholder)
            assignments.append(sql.SQL("{} = {}").format(sql.Identifier(f), placeholder))
        if assignments:
            query = sql.SQL(self._q["update_webhook"]).format(assignments=sql.SQL(", ").join(assignments))
            await execute(conn, query, jsonb_params(params))
        if data.auth_credential is not msgspec.UNSET:
            await self.set_credential(conn, box, webhook_id, data.auth_credential)

    async def set_status(self, conn: AsyncConnection[Any], webhook_id: int, status: str) -> int:
        """Move to ``status`` through the delivery functions; returns deliveries released/parked."""
        if status == "active":
            return int(await fetch_value(conn, self._q["resume_webhook"], {"id": webhook_id}) or 0)
        if status == "disabled":
            await fetch_value(
                conn, self._q["disable_webhook"], {"id": webhook_id, "reason": "disabled via API"}
            )
            return 0
        await fetch_value(conn, self._q["pause_webhook"], {"id": webhook_id})
        return 0

    async def clear_quarantine(self, conn: AsyncConnection[Any], webhook_id: int) -> bool:
        """Lift the webhook's quarantine; False when it was not quarantined."""
        return bool(await fetch_value(conn, self._q["clear_quarantine"], {"id": webhook_id}))

    async def trace(self, conn: AsyncConnection[Any], webhook_id: int, seconds: int) -> datetime | None:
        """Set the webhook's trace flag for ``seconds`` (0: off); returns until when it is on."""
        value = await fetch_value(conn, self._q["trace_webhook"], {"id": webhook_id, "seconds": seconds})
        return value if isinstance(value, datetime) else None

    async def delete(self, conn: AsyncConnection[Any], webhook_id: int) -> int:
        """Soft-delete; returns how many unfinished deliveries were cancelled."""
        row = await fetch_one(conn, self._q["delete_webhook"], {"id": webhook_id}, _Deleted)
        return 0 if row is None else row.cancelled

    # ----- signing secrets
    async def add_secret(
        self, conn: AsyncConnection[Any], box: SecretBox, webhook_id: int
    ) -> tuple[str, str]:
        """A new current signing key for the webhook: (key_id, whsec_ secret), made as the job worker
        makes one for a webhook created in SQL (``whk.webhook_secrets``)."""
        made = await aadd_secret(conn, box, webhook_id)
        return made.key_id, made.secret

    async def test_envelope(self, conn: AsyncConnection[Any], event_type: str, data: dict[str, Any]) -> bytes:
        """The body a delivery of this event would carry, timestamped now (whk.event_envelope)."""
        text = await fetch_value(
            conn, self._q["test_envelope"], {"event_type": event_type, "data": Jsonb(data)}
        )
        return str(text).encode("utf-8")

    async def event_example(self, conn: AsyncConnection[Any], event_type: str) -> Any:
        return await fetch_value(conn, self._q["event_example"], {"name": event_type})

    async def valid_keys(self, conn: AsyncConnection[Any], webhook_id: int) -> list[SigningKey]:
        return await fetch_all(conn, self._q["valid_secrets"], {"webhook_id": webhook_id}, SigningKey)
