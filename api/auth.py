"""Authentication, tenancy, IP allowlist, scopes and the per-consumer rate limit, for every route.

``AuthMiddleware`` runs before every handler except:

* handlers marked ``exclude_from_auth=True`` (``opt``), and
* paths matching the ANCHORED patterns of ``PUBLIC_PATHS`` (health and the API docs). Litestar's own
  ``exclude`` patterns are unanchored regexes searched anywhere in the path (litestar#4695), so they are
  not used; look-alike paths (``/api/whk/monitoring/healthz``, ``/x/api/whk/monitoring/health``,
  ``/api/whk/webhooks/schema/openapi.json``) stay protected (tests/integration/test_api_auth.py).

Order of checks for one request (each failure is problem+json; nothing reaches the handler):

1. credentials: ``Authorization: Bearer <key or JWT>`` or ``X-API-Key: <key>`` → 401 when missing,
   unknown, revoked, expired, or a JWT failing any check of ``api.jwtauth``;
2. tenant: the consumer must exist and be ``active`` → 403;
3. client address (``api.netaddr``: X-Forwarded-For only from WHK_API_TRUSTED_PROXIES) against the
   consumer's ``allowed_ips`` (admins: WHK_API_ADMIN_ALLOWED_IPS) → 403 and an ``auth.ip_denied`` audit row;
4. scope: ``<area>:read`` for GET/HEAD, ``<area>:write`` otherwise, area = first segment after
   ``/api/whk/`` → 403;
5. rate limit (``whk.api_rate_limit_hit``, state in PostgreSQL so every API process shares it) →
   429 with Retry-After; every authenticated response carries RateLimit-Limit/-Remaining/-Reset/-Policy.

The resulting ``api.deps.Principal`` is ``scope["user"]``.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from psycopg_pool import AsyncConnectionPool

from api.audit import AuditLog
from api.deps import ADMIN_SCOPE, Principal
from api.errors import Forbidden, TooManyRequests, Unauthorized
from api.jwtauth import JwtRejected, JwtVerifier
from api.keys import hash_key, split_key
from api.netaddr import Network, client_address, in_networks
from whk.settings import Settings
from whk.sqlfiles import load_queries

__all__ = ["PUBLIC_PATHS", "AuthConfig", "AuthMiddleware", "RequestIdMiddleware", "area_of"]

log = logging.getLogger("whk.api.auth")

# Anchored: the whole path must match. Health and the docs UI/schema only.
PUBLIC_PATHS = re.compile(
    r"\A(?:/api/whk/monitoring/health|/schema(?:/(?:openapi\.json|swagger|oauth2-redirect\.html)?)?)\Z"
)
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_REQUEST_ID = re.compile(r"\A[A-Za-z0-9._:-]{1,128}\Z")


# Resources that belong to another area's scope: a bulk retry is started under /deliveries and a replay
# under /webhooks/{id}/replay, so the key that may start one may follow and cancel it.
_AREA_OF_SEGMENT = {"bulk-retries": "deliveries", "replays": "webhooks"}


def area_of(path: str) -> str:
    """The scope area of a path: first segment after /api/whk/ ('' outside the API)."""
    if not path.startswith("/api/whk/"):
        return ""
    segments = path[len("/api/whk/") :].split("/", 2)
    if segments[0] == "exports" and len(segments) > 1:
        return segments[1]  # an export of deliveries is read under the deliveries scope, events under events
    return _AREA_OF_SEGMENT.get(segments[0], segments[0])


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """What the middleware needs, built once from the settings."""

    jwt: JwtVerifier | None
    trusted_proxies: tuple[Network, ...]
    admin_allowed_ips: tuple[Network, ...]
    rate_window_s: float
    queries: Mapping[str, str]  # auth.sql
    audit: AuditLog  # IP allowlist refusals are audited

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthConfig:
        return cls(
            jwt=JwtVerifier.from_settings(settings),
            trusted_proxies=settings.api.trusted_proxies,
            admin_allowed_ips=settings.api.admin_allowed_ips,
            rate_window_s=float(settings.api.rate_limit_window),
            queries=MappingProxyType(load_queries("api", "auth.sql")),
            audit=AuditLog(),
        )


class RequestIdMiddleware:
    """Take a sane X-Request-ID from the client or make one; echo it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableScopeHeaders.from_message(message)["x-request-id"] = rid
            await send(message)

        await self.app(scope, receive, send_with_id)


@dataclass(frozen=True, slots=True)
class _Tenant:
    status: str | None
    allowed_ips: Sequence[str]
    rate_limit: int | None


def _header(scope: Scope, name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in scope["headers"] if k == name]


def _credential(scope: Scope) -> str | None:
    for value in _header(scope, b"authorization"):
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    keys = _header(scope, b"x-api-key")
    return keys[0].strip() if keys and keys[0].strip() else None


def _networks(values: Sequence[str]) -> list[Network]:
    return [ipaddress.ip_network(v, strict=False) for v in values]


class AuthMiddleware:
    """ASGI middleware: see the module docstring. Needs ``app.state.pool`` and ``app.state.auth``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or self._public(scope):
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        principal, headers = await self._authenticate(scope, state.pool, state.auth)
        scope["user"] = principal
        scope["auth"] = principal.actor

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                mutable = MutableScopeHeaders.from_message(message)
                for k, v in headers.items():
                    mutable[k] = v
            await send(message)

        await self.app(scope, receive, send_with_limits)

    @staticmethod
    def _public(scope: Scope) -> bool:
        handler = scope.get("route_handler")
        if handler is not None and handler.opt.get("exclude_from_auth") is True:
            return True
        return PUBLIC_PATHS.match(scope["path"]) is not None

    async def _authenticate(
        self, scope: Scope, pool: AsyncConnectionPool[Any], cfg: AuthConfig
    ) -> tuple[Principal, dict[str, str]]:
        token = _credential(scope)
        if token is None:
            raise Unauthorized("credentials required: Authorization: Bearer <API key or JWT>, or X-API-Key")
        rid = str(scope.get("state", {}).get("request_id") or uuid.uuid4().hex)
        peer = scope.get("client")
        ip = client_address(
            peer[0] if peer else None, _header(scope, b"x-forwarded-for"), cfg.trusted_proxies
        )
        source_ip = str(ip) if ip is not None else ""
        async with pool.connection() as conn:
            await conn.set_autocommit(True)
            if token.startswith("whk_"):
                principal, tenant, key_id, touch = await self._api_key(conn, cfg, token, rid, source_ip)
                subject = f"consumer:{principal.consumer_id}" if principal.consumer_id else f"key:{key_id}"
            else:
                principal, tenant = await self._jwt(conn, cfg, token, rid, source_ip)
                key_id, touch = None, False
                subject = (
                    f"consumer:{principal.consumer_id}" if principal.consumer_id else f"jwt:{principal.actor}"
                )
            if tenant is not None and tenant.status != "active":
                raise Forbidden(f"consumer {principal.consumer_id} is {tenant.status or 'unknown'}")
            allowed = _networks(tenant.allowed_ips) if tenant is not None else list(cfg.admin_allowed_ips)
            if allowed and (ip is None or not in_networks(ip, allowed)):
                await cfg.audit.record(
                    conn,
                    principal,
                    "auth.ip_denied",
                    "consumer" if tenant else "admin",
                    principal.consumer_id,
                    None,
                    {"path": scope["path"], "method": scope.get("method", "")},
                )
                log.warning(
                    "request %s from %s denied by the IP allowlist of %s", rid, source_ip, principal.actor
                )
                raise Forbidden("this address is not allowed for these credentials")
            self._check_scope(scope, principal)
            cur = await conn.execute(
                cfg.queries["rate_limit_hit"],
                {
                    "subject": subject,
                    "limit": tenant.rate_limit if tenant else None,
                    "window": cfg.rate_window_s,
                },
            )
            row = await cur.fetchone()
            if touch and key_id is not None:
                await conn.execute(cfg.queries["touch_key"], {"id": key_id})
        assert row is not None
        allowed_now, limit, remaining, retry_after, reset = row
        window = math.ceil(cfg.rate_window_s)
        headers = {
            "ratelimit-limit": str(limit),
            "ratelimit-remaining": str(remaining),
            "ratelimit-reset": str(max(0, math.ceil(reset))),
            "ratelimit-policy": f"{limit};w={window}",
        }
        if not allowed_now:
            headers["retry-after"] = str(max(1, math.ceil(retry_after)))
            raise TooManyRequests(
                f"rate limit of {limit} requests per {window} s exceeded",
                headers=headers,
                extra={"retry_after_s": max(1, math.ceil(retry_after))},
            )
        return principal, headers

    @staticmethod
    async def _api_key(
        conn: Any, cfg: AuthConfig, token: str, rid: str, source_ip: str
    ) -> tuple[Principal, _Tenant | None, int, bool]:
        prefix = split_key(token)
        if prefix is None:
            raise Unauthorized("malformed API key")
        cur = await conn.execute(cfg.queries["key_by_prefix"], {"prefix": prefix})
        row = await cur.fetchone()
        # Compare even when no row exists, so timing does not tell whether a prefix is known.
        stored = bytes(row[1]) if row else b"\x00" * 32
        if not hmac.compare_digest(stored, hash_key(token)) or row is None:
            raise Unauthorized("invalid API key")
        key_id, _, consumer_id, is_admin, scopes, revoked, expired, touch, status, ips, limit = row
        if revoked:
            raise Unauthorized("API key revoked")
        if expired:
            raise Unauthorized("API key expired")
        principal = Principal(
            actor=f"apikey:{prefix}",
            consumer_id=consumer_id,
            scopes=frozenset({ADMIN_SCOPE} if is_admin else scopes),
            request_id=rid,
            source_ip=source_ip,
            credential_id=key_id,
        )
        tenant = None if is_admin else _Tenant(status=status, allowed_ips=ips or [], rate_limit=limit)
        return principal, tenant, key_id, bool(touch)

    @staticmethod
    async def _jwt(
        conn: Any, cfg: AuthConfig, token: str, rid: str, source_ip: str
    ) -> tuple[Principal, _Tenant | None]:
        if cfg.jwt is None:
            raise Unauthorized("JWT authentication is not enabled; use an API key")
        try:
            claims = cfg.jwt.verify(token)
        except JwtRejected as exc:
            raise Unauthorized(exc.message) from None
        tenant: _Tenant | None = None
        if claims.consumer_id is not None:
            cur = await conn.execute(cfg.queries["consumer_for_jwt"], {"consumer_id": claims.consumer_id})
            row = await cur.fetchone()
            if row is None:
                raise Unauthorized("the token's consumer does not exist")
            tenant = _Tenant(status=row[0], allowed_ips=row[1] or [], rate_limit=row[2])
        principal = Principal(
            actor=f"jwt:{claims.subject}",
            consumer_id=claims.consumer_id,
            scopes=frozenset({ADMIN_SCOPE}) if claims.admin else (claims.scopes or frozenset({"*"})),
            request_id=rid,
            source_ip=source_ip,
        )
        return principal, tenant

    @staticmethod
    def _check_scope(scope: Scope, principal: Principal) -> None:
        area = area_of(scope["path"])
        level = "read" if scope.get("method") in _READ_METHODS else "write"
        if area and not principal.allows(f"{area}:{level}"):
            raise Forbidden(f"the credential lacks the scope {area}:{level}")
