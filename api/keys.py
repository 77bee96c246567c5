"""API keys: creation (plaintext returned once), listing, revocation, and the CLI entry points.

Format: ``whk_<prefix>_<secret>`` — ``prefix`` is 12 random lowercase alphanumerics stored in clear to find
the row, ``secret`` 32 random bytes (base64url). The database keeps SHA-256 of the whole key; the
middleware recomputes it and compares with ``hmac.compare_digest`` (bytes). Nothing else of the key is
stored or logged.

Revocation sets ``revoked_at``; every request reads the key row, so a revoked key fails from the next
request after the revoking transaction commits (revocation bound: 0 s, no cache).

``ApiKeyStore`` holds the queries of keys.sql and the audit log every change writes to; the API's
controller keeps one. The CLI (``whk apikey create``) calls ``create_api_key`` on its synchronous
connection, ``whk up`` calls ``rotate_development_key`` (at most one development key is valid at a
time); ``rotate_command`` (``whk secrets rotate``) lives in ``whk.secretbox``.
"""

from __future__ import annotations

import getpass
import hashlib
import secrets
import string
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
import psycopg
from psycopg import AsyncConnection

from api.audit import AuditLog
from api.deps import ADMIN_SCOPE, Principal
from api.errors import Conflict, Forbidden, NotFound, Unprocessable
from whk.errors import WhkError
from whk.secretbox import rotate_command
from whk.sqlfiles import load_queries

__all__ = [
    "KEY_PREFIX",
    "ApiKey",
    "ApiKeyError",
    "ApiKeyStore",
    "create_api_key",
    "hash_key",
    "rotate_command",
    "rotate_development_key",
    "split_key",
    "validate_scopes",
]

KEY_PREFIX = "whk_"
_ALPHABET = string.ascii_lowercase + string.digits
PREFIX_LEN = 12
# The areas scopes may name (first path segment after /api/whk/).
AREAS = (
    "webhooks",
    "events",
    "event-types",
    "deliveries",
    "monitoring",
    "security",
    "consumers",
    "api-keys",
    "acks",
)


class ApiKeyError(WhkError):
    """An API key cannot be created (unknown consumer, bad scopes)."""


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    """An API key as listed (never the secret)."""

    id: int
    prefix: str
    consumer_id: int | None
    is_admin: bool
    name: str
    scopes: list[str]
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def split_key(key: str) -> str | None:
    """The lookup prefix of a well-formed key, else None (malformed keys never reach the database)."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    prefix, sep, secret = key[len(KEY_PREFIX) :].partition("_")
    if not sep or len(prefix) != PREFIX_LEN or not secret or any(c not in _ALPHABET for c in prefix):
        return None
    return prefix


def _new_key() -> tuple[str, str]:
    prefix = "".join(secrets.choice(_ALPHABET) for _ in range(PREFIX_LEN))
    return prefix, f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"


def validate_scopes(scopes: Sequence[str], *, admin: bool) -> list[str]:
    """Normalised scopes; raise ApiKeyError naming the first bad one."""
    if admin:
        return [ADMIN_SCOPE]
    out: list[str] = []
    for scope in scopes or ["*"]:
        area, sep, level = scope.partition(":")
        ok = scope == "*" or (sep and area in AREAS and level in ("read", "write", "*"))
        if not ok:
            raise ApiKeyError(
                f"unknown scope {scope!r}",
                hint="use '*', or '<area>:read|write|*' with area in " + ", ".join(AREAS),
            )
        if scope not in out:
            out.append(scope)
    return out


def _row(cur: Any, row: Any) -> ApiKey:
    cols = [c.name for c in cur.description]
    return ApiKey(**dict(zip(cols, row, strict=True)))


def _insert_params(
    *,
    admin: bool,
    consumer_id: int | None,
    name: str,
    scopes: Sequence[str],
    created_by: str,
    expires_at: datetime | None,
) -> tuple[str, dict[str, Any]]:
    if admin == (consumer_id is not None):
        raise ApiKeyError("a key is either --admin or for one --consumer", hint="pass exactly one of them")
    prefix, key = _new_key()
    params = {
        "prefix": prefix,
        "secret_hash": hash_key(key),
        "consumer_id": consumer_id,
        "is_admin": admin,
        "name": name,
        "scopes": validate_scopes(scopes, admin=admin),
        "created_by": created_by,
        "expires_at": expires_at,
    }
    return key, params


def _cli_principal(actor: str) -> Principal:
    return Principal(
        actor=actor, consumer_id=None, scopes=frozenset({ADMIN_SCOPE}), request_id="cli", source_ip=""
    )


def _covers(held: frozenset[str], scope: str) -> bool:
    if ADMIN_SCOPE in held or "*" in held or scope in held:
        return True
    area, _, _ = scope.partition(":")
    return scope != "*" and f"{area}:*" in held


class ApiKeyStore:
    """API key rows (queries of keys.sql), each change with its audit row in the same transaction."""

    def __init__(self) -> None:
        self.queries = load_queries("api", "keys.sql")
        self.audit = AuditLog()

    async def acreate(
        self,
        conn: AsyncConnection[Any],
        principal: Principal,
        *,
        consumer_id: int | None,
        name: str,
        scopes: Sequence[str],
        expires_at: datetime | None,
    ) -> tuple[ApiKey, str]:
        """Create a key from the API (inside the request's transaction); admins may create admin keys
        (``consumer_id`` None), consumers only keys of their own tenant with scopes they hold themselves."""
        admin = consumer_id is None
        if not principal.is_admin:
            if consumer_id != principal.consumer_id:
                raise NotFound("no such consumer")
            # More privilege than the caller holds is 403 (docs/api.md, Tenancy): the admin scope, or a
            # scope the caller lacks.
            missing = [s for s in scopes or ["*"] if s == ADMIN_SCOPE or not _covers(principal.scopes, s)]
            if missing:
                raise Forbidden(
                    f"a key cannot have scopes its creator lacks: {', '.join(missing)}",
                    extra={"errors": [{"pointer": "/scopes", "message": f"not held: {', '.join(missing)}"}]},
                )
        try:
            key, params = _insert_params(
                admin=admin,
                consumer_id=consumer_id,
                name=name,
                scopes=scopes,
                created_by=principal.actor,
                expires_at=expires_at,
            )
        except ApiKeyError as exc:
            raise Unprocessable(exc.message, errors=[{"pointer": "/scopes", "message": exc.message}]) from exc
        if consumer_id is not None:
            cur = await conn.execute(self.queries["consumer_exists"], params)
            if await cur.fetchone() is None:
                raise NotFound("no such consumer")
        cur = await conn.execute(self.queries["insert_key"], params)
        created = _row(cur, await cur.fetchone())
        await self.audit.record(
            conn,
            principal,
            "api_key.create",
            "api_key",
            created.id,
            None,
            msgspec.to_builtins(created),
            consumer_id=consumer_id,
        )
        return created, key

    async def page(
        self,
        conn: AsyncConnection[Any],
        principal: Principal,
        *,
        consumer_id: int | None = None,
        include_revoked: bool = False,
        after_id: int | None = None,
        limit: int = 50,
    ) -> list[ApiKey]:
        cur = await conn.execute(
            self.queries["list_keys"],
            {
                "tenant": principal.tenant_filter(),
                "consumer_id": consumer_id,
                "include_revoked": include_revoked,
                "after_id": after_id,
                "limit": max(1, min(limit, 500)),
            },
        )
        return [_row(cur, r) for r in await cur.fetchall()]

    async def revoke(self, conn: AsyncConnection[Any], principal: Principal, key_id: int) -> ApiKey:
        """Revoke a key (another tenant's id → NotFound; already revoked → Conflict)."""
        cur = await conn.execute(self.queries["get_key"], {"id": key_id, "tenant": principal.tenant_filter()})
        row = await cur.fetchone()
        if row is None:
            raise NotFound("no such API key")
        before = _row(cur, row)
        if before.revoked_at is not None:
            raise Conflict("the key is already revoked")
        cur = await conn.execute(self.queries["revoke_key"], {"id": key_id, "actor": principal.actor})
        after = _row(cur, await cur.fetchone())
        await self.audit.record(
            conn,
            principal,
            "api_key.revoke",
            "api_key",
            key_id,
            msgspec.to_builtins(before),
            msgspec.to_builtins(after),
            consumer_id=after.consumer_id,
        )
        return after


def create_api_key(
    conn: psycopg.Connection[Any],
    *,
    admin: bool,
    consumer_id: int | None,
    name: str | None = None,
    scopes: Sequence[str] | None = None,
    expires_at: datetime | None = None,
    actor: str | None = None,
    store: ApiKeyStore | None = None,
) -> str:
    """Create a key in one transaction (with its audit row) and return the plaintext — the only time
    it exists. Raises ApiKeyError for an unknown consumer or bad scopes. The CLI's path (``whk apikey
    create``, ``whk up``'s development key), on a synchronous connection."""
    store = store or ApiKeyStore()
    actor = actor or f"cli:{getpass.getuser()}"
    key, params = _insert_params(
        admin=admin,
        consumer_id=consumer_id,
        name=name or ("admin" if admin else f"consumer {consumer_id}"),
        scopes=scopes or (),
        created_by=actor,
        expires_at=expires_at,
    )
    with conn.transaction():
        exists = consumer_id is None or conn.execute(store.queries["consumer_exists"], params).fetchone()
        if not exists:
            raise ApiKeyError(f"consumer {consumer_id} does not exist", hint="list consumers with the API")
        cur = conn.execute(store.queries["insert_key"], params)
        created = _row(cur, cur.fetchone())
        store.audit.record(
            conn,
            _cli_principal(actor),
            "api_key.create",
            "api_key",
            created.id,
            None,
            msgspec.to_builtins(created),
            consumer_id=consumer_id,
        )
    return key


def rotate_development_key(conn: psycopg.Connection[Any], *, name: str) -> tuple[str, int]:
    """Revoke every valid admin key called ``name`` and create a new one, in one transaction with the
    audit rows; return the new key and how many were revoked. ``whk up``'s development key: at most one
    is valid at a time, whoever started the earlier ones."""
    store = ApiKeyStore()
    actor = f"cli:{getpass.getuser()}"
    with conn.transaction():
        cur = conn.execute(store.queries["revoke_dev_keys"], {"name": name, "actor": actor})
        revoked = [_row(cur, r) for r in cur.fetchall()]
        for old in revoked:
            store.audit.record(
                conn,
                _cli_principal(actor),
                "api_key.revoke",
                "api_key",
                old.id,
                None,
                msgspec.to_builtins(old),
            )
        key = create_api_key(conn, admin=True, consumer_id=None, name=name, actor=actor, store=store)
    return key, len(revoked)
