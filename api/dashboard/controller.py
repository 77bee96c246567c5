"""``/dashboard``: the operator's web UI, server-rendered (Jinja templates, vendored uPlot and htmx).

Sign-in (``api.dashboard.session``): the login form takes an API key once and answers with a signed,
expiring, HttpOnly, SameSite=Strict session cookie. Every page re-reads the key row and applies what the
API's authentication applies — revoked/expired key, suspended tenant, IP allowlist, scopes (a page of
area ``deliveries`` needs ``deliveries:read``, its actions ``deliveries:write``) — then reads through
``api.dashboard.data`` with the same tenancy as the API: another tenant's webhook or delivery is a 404
page. Every POST carries the session's CSRF token (403 without it) and writes the same audit row the
API's equivalent endpoint writes. These routes are outside the OpenAPI document and the API's
header-based authentication (``exclude_from_auth``); they authenticate by cookie here.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie, State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.params import FromPath
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER
from psycopg import AsyncConnection

from api.audit import AuditLog
from api.auth import AuthConfig
from api.dashboard.data import WINDOWS, DashboardData, heat_grid
from api.dashboard.session import COOKIE, Session, SessionSigner
from api.deliveries.schemas import BulkRetryRequest
from api.deps import ADMIN_SCOPE, Principal
from api.errors import ApiError, BadRequest, Conflict, Forbidden, NotFound
from api.keys import hash_key, split_key
from api.monitoring import actions
from api.monitoring.schemas import Silence
from api.netaddr import client_address, in_networks
from api.webhooks.controller import send_test_event
from api.webhooks.schemas import TestRequest, TestResult, Webhook
from whk.settings import Settings

__all__ = ["DashboardController", "Viewer"]

Conn = NamedDependency[AsyncConnection[Any]]
LOGIN_COOKIE = "whk_login"
PATH = "/dashboard"
_STATUSES = ("pending", "in_flight", "awaiting_ack", "delivered", "dead", "parked", "cancelled", "superseded")
# The silence lengths the alerts page offers (seconds; 0 lifts a silence). The API takes any 0..30 days.
_SILENCES = ((3600, "1 h"), (14400, "4 h"), (86400, "24 h"), (0, "lift"))
_SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


class SignInRequired(Exception):
    """No valid session: the handler answers with a redirect to the login page."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """The signed-in operator: the API's ``Principal`` plus the session and its CSRF token."""

    principal: Principal
    session: Session
    csrf: str

    @property
    def tenant(self) -> int | None:
        return self.principal.tenant_filter()

    @property
    def label(self) -> str:
        who = "admin" if self.principal.is_admin else f"consumer {self.principal.consumer_id}"
        return f"{who} · {self.principal.actor}"

    def require(self, scope: str) -> None:
        if not self.principal.allows(scope):
            raise Forbidden(f"this key lacks the scope {scope}")


def _signer(state: State) -> SessionSigner:
    signer = state.get("dashboard_signer")
    if signer is None:
        settings: Settings = state.settings
        signer = SessionSigner.from_secretbox(state.secretbox, settings.api.dashboard_session_s)
        state.dashboard_signer = signer
    assert isinstance(signer, SessionSigner)
    return signer


def _client_ip(
    request: Request[Any, Any, Any], cfg: AuthConfig
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    forwarded = [v for k, v in request.headers.items() if k.lower() == "x-forwarded-for"]
    peer = request.client.host if request.client else None
    return client_address(peer, forwarded, cfg.trusted_proxies)


def _address_allowed(
    request: Request[Any, Any, Any], cfg: AuthConfig, consumer_id: int | None, allowed_ips: list[str] | None
) -> tuple[bool, ipaddress.IPv4Address | ipaddress.IPv6Address | None]:
    """The API's IP allowlist rule: the consumer's ``allowed_ips``, or WHK_API_ADMIN_ALLOWED_IPS for an
    admin key; an empty list allows any address. Returns (allowed, client address)."""
    ip = _client_ip(request, cfg)
    allowed = (
        [ipaddress.ip_network(v, strict=False) for v in allowed_ips or []]
        if consumer_id is not None
        else list(cfg.admin_allowed_ips)
    )
    return (not allowed or (ip is not None and in_networks(ip, allowed))), ip


def _secure(request: Request[Any, Any, Any], settings: Settings) -> bool:
    return request.url.scheme == "https" or settings.core.environment == "production"


async def provide_viewer(request: Request[Any, Any, Any], state: State, conn: Conn) -> Viewer:
    """The session's operator, re-checked against the key row like the API's authentication."""
    signer = _signer(state)
    session = signer.verify(request.cookies.get(COOKIE))
    if session is None:
        raise SignInRequired
    key = await state.dashboard_data.key(conn, session.key_id)
    if key is None or key.prefix != session.p or key.revoked or key.expired:
        raise SignInRequired
    if key.consumer_id is not None and key.consumer_status != "active":
        raise Forbidden(f"consumer {key.consumer_id} is {key.consumer_status or 'unknown'}")
    ok, ip = _address_allowed(request, state.auth, key.consumer_id, key.allowed_ips)
    if not ok:
        raise Forbidden("this address is not allowed for these credentials")
    principal = Principal(
        actor=f"apikey:{key.prefix}",
        consumer_id=key.consumer_id,
        scopes=frozenset({ADMIN_SCOPE} if key.is_admin else key.scopes),
        request_id=str(request.scope.get("state", {}).get("request_id") or uuid.uuid4().hex),
        source_ip=str(ip) if ip is not None else "",
        credential_id=key.id,
    )
    return Viewer(principal=principal, session=session, csrf=signer.csrf_token(session))


def _page(name: str, viewer: Viewer | None, status_code: int = 200, **context: Any) -> Template:
    return Template(
        template_name=name,
        context={"viewer": viewer, "now": datetime.now(UTC), **context},
        status_code=status_code,
        headers=_SECURITY_HEADERS,
    )


def _error_page(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, SignInRequired):
        # Back to the page after signing in; a form's POST target is no page: the overview instead.
        target = (
            request.url.path + (f"?{request.url.query}" if request.url.query else "")
            if request.method == "GET"
            else f"{PATH}/overview"
        )
        response: Response[Any] = Redirect(
            f"{PATH}/login?{urlencode({'next': target})}", status_code=HTTP_303_SEE_OTHER
        )
        response.delete_cookie(COOKIE, path=PATH)
        return response
    if isinstance(exc, ApiError):
        status, title, detail = exc.status, exc.title, exc.detail or exc.title
    elif isinstance(exc, ValidationException):
        status, title, detail = 400, "Bad Request", "a parameter of this page is not valid"
    elif isinstance(exc, HTTPException):
        status, title, detail = exc.status_code, "Error", exc.detail
    else:
        raise exc
    return _page("error.html", None, status_code=status, title=title, detail=detail, status=status)


def _opt_int(form: Mapping[str, Any], name: str) -> int | None:
    raw = str(form.get(name) or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise BadRequest(f"{name} must be a positive integer")
    return int(raw)


def _opt_time(form: Mapping[str, Any], name: str) -> datetime | None:
    raw = str(form.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a date and time (YYYY-MM-DDTHH:MM)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _window(raw: str | None, default: str = "1h") -> str:
    value = raw or default
    if value not in WINDOWS:
        raise BadRequest(f"window must be one of {', '.join(WINDOWS)}")
    return value


class DashboardController(Controller):
    path = PATH
    include_in_schema = False
    opt = {"exclude_from_auth": True}  # noqa: RUF012 - Litestar reads a class attribute; cookies here
    dependencies = {"viewer": Provide(provide_viewer)}  # noqa: RUF012
    exception_handlers = {SignInRequired: _error_page, ApiError: _error_page, HTTPException: _error_page}  # noqa: RUF012

    def __init__(self, owner: Any) -> None:
        super().__init__(owner)
        self.audit_log = AuditLog()

    # ----- helpers
    @staticmethod
    def _data(state: State) -> DashboardData:
        data = state.dashboard_data
        assert isinstance(data, DashboardData)
        return data

    @staticmethod
    async def _form(request: Request[Any, Any, Any], viewer: Viewer, state: State) -> dict[str, Any]:
        """The POSTed form, once its CSRF token is this session's (403 otherwise)."""
        form = dict(await request.form())
        token = form.get("csrf")
        if not isinstance(token, str) or not _signer(state).csrf_ok(viewer.session, token):
            raise Forbidden("the form's CSRF token is missing or not this session's; reload the page")
        return form

    # ----- sign-in
    @get("/", sync_to_thread=False)
    def home(self) -> Redirect:
        return Redirect(f"{PATH}/overview", status_code=HTTP_303_SEE_OTHER)

    @get("/login")
    async def login_page(self, request: Request[Any, Any, Any], state: State) -> Template:
        nonce = secrets.token_urlsafe(16)
        page = _page(
            "login.html",
            None,
            login_token=self._login_token(state, nonce),
            next=self._next(request.query_params.get("next")),
            error=None,
        )
        page.cookies.append(self._login_cookie(request, state, nonce))
        return page

    @staticmethod
    def _login_token(state: State, nonce: str) -> str:
        return hmac.new(_signer(state).key, b"login:" + nonce.encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def _login_cookie(request: Request[Any, Any, Any], state: State, nonce: str) -> Cookie:
        return Cookie(
            key=LOGIN_COOKIE,
            value=nonce,
            path=PATH,
            httponly=True,
            samesite="strict",
            secure=_secure(request, state.settings),
            max_age=3600,
        )

    @staticmethod
    def _next(raw: str | None) -> str:
        """Only a dashboard path of this site (no scheme, no host, no //): an open redirect otherwise."""
        if raw and raw.startswith(f"{PATH}/") and "//" not in raw and "\\" not in raw:
            return raw
        return f"{PATH}/overview"

    @post("/login", status_code=HTTP_303_SEE_OTHER)
    async def login(self, request: Request[Any, Any, Any], state: State, conn: Conn) -> Response[Any]:
        form = dict(await request.form())
        nonce = request.cookies.get(LOGIN_COOKIE) or ""
        token = str(form.get("login_token") or "")
        next_url = self._next(str(form.get("next") or ""))
        expected = self._login_token(state, nonce)
        if not nonce or not hmac.compare_digest(expected.encode(), token.encode("ascii", "replace")):
            raise Forbidden("the sign-in form expired or came from another site; reload the page")
        key = str(form.get("api_key") or "").strip()
        principal, problem = await self._check_key(request, state, conn, key)
        if principal is None:
            fresh = secrets.token_urlsafe(16)
            page = _page(
                "login.html",
                None,
                status_code=401,
                login_token=self._login_token(state, fresh),
                next=next_url,
                error=problem,
            )
            page.cookies.append(self._login_cookie(request, state, fresh))
            return page
        assert principal.credential_id is not None
        prefix = principal.actor.removeprefix("apikey:")
        value, session = _signer(state).issue(principal.credential_id, prefix)
        await self.audit_log.record(
            conn,
            principal,
            "dashboard.login",
            "api_key",
            principal.credential_id,
            None,
            {"expires_at": datetime.fromtimestamp(session.expires_at, UTC).isoformat()},
        )
        response: Response[Any] = Redirect(next_url, status_code=HTTP_303_SEE_OTHER)
        response.set_cookie(
            key=COOKIE,
            value=value,
            path=PATH,
            httponly=True,
            samesite="strict",
            secure=_secure(request, state.settings),
            expires=session.expires_at,
        )
        response.delete_cookie(LOGIN_COOKIE, path=PATH)
        return response

    async def _check_key(
        self, request: Request[Any, Any, Any], state: State, conn: AsyncConnection[Any], key: str
    ) -> tuple[Principal | None, str]:
        """The key's principal, or None and why (the same checks as the API's authentication)."""
        cfg: AuthConfig = state.auth
        prefix = split_key(key) if key.startswith("whk_") else None
        if prefix is None:
            return None, "that is not a WHK API key (whk_…)"
        cur = await conn.execute(cfg.queries["key_by_prefix"], {"prefix": prefix})
        row = await cur.fetchone()
        stored = bytes(row[1]) if row else b"\x00" * 32
        if not hmac.compare_digest(stored, hash_key(key)) or row is None:
            return None, "unknown API key"
        key_id, _, consumer_id, is_admin, scopes, revoked, expired, _touch, status, ips, _limit = row
        if revoked or expired:
            return None, "this API key is revoked or expired"
        if consumer_id is not None and status != "active":
            return None, f"consumer {consumer_id} is {status}"
        ok, ip = _address_allowed(request, cfg, consumer_id, ips)
        if not ok:
            return None, "this address is not allowed for this key"
        principal = Principal(
            actor=f"apikey:{prefix}",
            consumer_id=consumer_id,
            scopes=frozenset({ADMIN_SCOPE} if is_admin else scopes),
            request_id=str(request.scope.get("state", {}).get("request_id") or uuid.uuid4().hex),
            source_ip=str(ip) if ip is not None else "",
            credential_id=key_id,
        )
        return principal, ""

    @post("/logout", status_code=HTTP_303_SEE_OTHER)
    async def logout(
        self, request: Request[Any, Any, Any], state: State, conn: Conn, viewer: NamedDependency[Viewer]
    ) -> Response[Any]:
        await self._form(request, viewer, state)
        await self.audit_log.record(
            conn, viewer.principal, "dashboard.logout", "api_key", viewer.session.key_id, None, None
        )
        response: Response[Any] = Redirect(f"{PATH}/login", status_code=HTTP_303_SEE_OTHER)
        response.delete_cookie(COOKIE, path=PATH)
        return response

    # ----- overview
    async def _overview_context(
        self, state: State, conn: AsyncConnection[Any], viewer: Viewer, window: str
    ) -> dict[str, Any]:
        data = self._data(state)
        view = await data.overview(conn, viewer.tenant, window)
        if viewer.principal.is_admin:
            settings: Settings = state.settings
            view.health = await data.health(conn, float(settings.dispatcher.lease_seconds))
        chart = {
            "t": [p.t for p in view.series],
            "events_in": [p.events_in for p in view.series],
            "delivered": [p.delivered for p in view.series],
            "failed": [p.failed for p in view.series],
            "bucket_s": view.bucket_s,
        }
        return {
            "o": view,
            "window": window,
            "windows": list(WINDOWS),
            "chart": msgspec.json.encode(chart).decode(),
        }

    @get("/overview")
    async def overview(
        self, request: Request[Any, Any, Any], state: State, conn: Conn, viewer: NamedDependency[Viewer]
    ) -> Template:
        viewer.require("monitoring:read")
        window = _window(request.query_params.get("window"))
        return _page("overview.html", viewer, **await self._overview_context(state, conn, viewer, window))

    @get("/overview/live")
    async def overview_live(
        self, request: Request[Any, Any, Any], state: State, conn: Conn, viewer: NamedDependency[Viewer]
    ) -> Template:
        """The overview's numbers alone (htmx swaps them in every few seconds)."""
        viewer.require("monitoring:read")
        window = _window(request.query_params.get("window"))
        return _page(
            "_overview_live.html", viewer, **await self._overview_context(state, conn, viewer, window)
        )

    # ----- webhooks
    @get("/webhooks")
    async def webhooks(
        self, request: Request[Any, Any, Any], state: State, conn: Conn, viewer: NamedDependency[Viewer]
    ) -> Template:
        viewer.require("webhooks:read")
        after = _opt_int(request.query_params, "after_id")
        limit = 100
        rows = await self._data(state).webhook_rows(conn, viewer.tenant, after_id=after, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return _page("webhooks.html", viewer, rows=rows, next_after=rows[-1].id if more and rows else None)

    @get("/webhooks/{webhook_id:int}")
    async def webhook(
        self,
        request: Request[Any, Any, Any],
        state: State,
        conn: Conn,
        viewer: NamedDependency[Viewer],
        webhook_id: FromPath[int],
    ) -> Template:
        viewer.require("webhooks:read")
        hook = await self._data(state).webhook(conn, viewer.tenant, webhook_id)
        if hook is None:
            raise NotFound(f"webhook {webhook_id} not found")
        window = _window(request.query_params.get("window"), "24h")
        return await self._webhook_page(
            state, conn, viewer, hook, window, done=request.query_params.get("done"), test=None
        )

    async def _webhook_page(
        self,
        state: State,
        conn: AsyncConnection[Any],
        viewer: Viewer,
        hook: Webhook,
        window: str,
        *,
        done: str | None,
        test: TestResult | None,
    ) -> Template:
        series = await self._data(state).webhook_series(conn, viewer.tenant, hook.id, window)
        chart = {
            "t": [p.t for p in series],
            "delivered": [p.delivered for p in series],
            "failed": [p.failed for p in series],
            "bucket_s": int(WINDOWS[window][1].total_seconds()),
        }
        config = msgspec.to_builtins(hook)
        config["headers"] = dict.fromkeys(hook.headers, "•••")  # header values may carry credentials
        return _page(
            "webhook.html",
            viewer,
            hook=hook,
            config=msgspec.json.format(msgspec.json.encode(config), indent=2).decode(),
            chart=msgspec.json.encode(chart).decode(),
            window=window,
            windows=list(WINDOWS),
            done=done,
            test=test,
        )

    @post("/webhooks/{webhook_id:int}/test", status_code=200)
    async def webhook_test(
        self,
        request: Request[Any, Any, Any],
        state: State,
        conn: Conn,
        viewer: NamedDependency[Viewer],
        webhook_id: FromPath[int],
    ) -> Template:
        """Send a signed test event now (``POST /webhooks/{id}/test``'s code) and show the answer."""
        form = await self._form(request, viewer, state)
        viewer.require("webhooks:write")
        hook = await self._data(state).webhook(conn, viewer.tenant, webhook_id)
        if hook is None:
            raise NotFound(f"webhook {webhook_id} not found")
        try:
            req = msgspec.convert(
                {"event_type": str(form.get("event_type") or "system.health_check")}, TestRequest
            )
        except msgspec.ValidationError as exc:
            raise BadRequest(f"event type: {exc}") from None
        result = await send_test_event(
            conn,
            viewer.principal,
            self._data(state).webhooks,
            self.audit_log,
            state.settings,
            state.secretbox,
            hook,
            req,
        )
        return await self._webhook_page(state, conn, viewer, hook, "24h", done=None, test=result)

    @post("/webhooks/{webhook_id:int}/{action:str}", status_code=HTTP_303_SEE_OTHER)
    async def webhook_action(
        self,
        request: Request[Any, Any, Any],
        state: State,
        conn: Conn,
        viewer: NamedDependency[Viewer],
        webhook_id: FromPath[int],
        action: FromPath[str],
    ) -> Redirect:
        await self._form(request, viewer, state)
        viewer.require("webhooks:write")
        target = {"pause": "paused", "resume": "active"}.get(action)
        if target is None:
            raise NotFound(f"no action {action!r}")
        data = self._data(state)
        before = await data.lock_webhook(conn, viewer.tenant, webhook_id)
        if before is None:
            raise NotFound(f"webhook {webhook_id} not found")
        if before.status != target:
            await data.set_webhook_status(conn, webhook_id, target)
            await self.audit_log.record(
                conn,
                viewer.principal,
                "webhook.update",
                "webhook",
                webhook_id,
                {"status": before.status, "consumer_id": before.consumer_id},
                {"status": target, "consumer_id": before.consumer_id, "via": "dashboard"},
            )
        return Redirect(f"{PATH}/webhooks/{webhook_id}?done={action}", status_code=HTTP_303_SEE_OTHER)

    # ----- deliveries
    @get("/deliveries")
    async def deliveries(
        self, request: Request[Any, Any, Any], state: State, conn: Conn, viewer: NamedDependency[Viewer]
    ) -> Template:
        viewer.require("deliveries:read")
        q = request.query_params
        statuses = [s for s in q.getall("status", []) if s]
        bad = [s for s in statuses if s not in _STATUSES]
        if bad:
            raise BadRequest(f"unknown status {bad[0]!r}")
        event_type = (q.get("event_type") or "").strip() or None
        if event_type is not None and len(event_type) > 200:
            raise BadRequest("event_type is at most 200 characters")
        webhook_id, consumer_id = _opt_int(q, "webhook_id"), _opt_int(q, "consumer_id")
        filters = {
            "webhook_id": webhook_id,
            "consumer_id": consumer_id,
            "status": statuses or None,
            "event_type": event_type,
            "created_from": _opt_time(q, "created_from"),
            "created_to": _opt_time(q, "created_to"),
        }
        data = self._data(state)
        tenant = viewer.tenant
        # Ids named in filters must be the caller's own: 404 like the API (api.deliveries.require_refs).
        if tenant is not None and consumer_id not in (None, tenant):
            raise NotFound(f"consumer {consumer_id} not found")
        if webhook_id is not None and await data.webhook(conn, tenant, webhook_id) is None:
            raise NotFound(f"webhook {webhook_id} not found")
        cursor = q.get("cursor") or None
        items, nxt = await data.delivery_page(conn, tenant, filters, cursor=cursor, limit=50)
        keep = [(k, v) for k, v in q.multi_items() if k != "cursor" and v]
        next_url = f"{PATH}/deliveries?{urlencode([*keep, ('cursor', nxt)])}" if nxt else None
        return _page(
            "deliveries.html",
            viewer,
            items=items,
            next_url=next_url,
            statuses=_STATUSES,
            chosen=set(statuses),
            f={
                k: q.get(k) or ""
                for k in ("webhook_id", "consumer_id", "event_type", "created_from", "created_to")
            },
        )

    @get("/deliveries/{delivery_id:int}")
    async def delivery(
        self,
        request: Request[Any, Any, Any],
        state: State,
        conn: Conn,
        viewer: NamedDependency[Viewer],
        delivery_id: FromPath[int],
    ) -> Template:
        viewer.require("deliveries:read")
        detail = await self._data(state).delivery(conn, viewer.tenant, delivery_id)
        if detail is None:
            raise NotFound(f"delivery {delivery_id} not found")
        payload = msgspec.json.format(msgspec.json.encode(detail.payload), indent=2).decode()
        return _page(
            "delivery.html", viewer, d=detail, payload=payload, done=request.query_params.get("done")
        )

    @post("/deliveries/{delivery_id:int}/retry", status_code=HTTP_303_SEE_OTHER)
    async def retry(
        self,
        request: Request[Any, Any, Any],
        state: State,
        conn: Conn,
        viewer: NamedDependency[Viewer],
        delivery_id: FromPath[int],
    ) -> Redirect:
        form = await self._form(request, viewer, state)
        viewer.require("deliveries:write")
        data = self._data(state)
        before = await data.lock_delivery(conn, viewer.tenant, delivery_id)
        if before is None:
            raise NotFound(f"delivery {delivery_id} not found")
        if before.status == "in_flight":
            raise Conflict("the delivery is being attempted right now; retry after it finishes")
        requeued = await data.retry_delivery(conn, delivery_id)
        after = await data.lock_delivery(conn, None, delivery_id)
        assert after is not None
        await self.audit_log.record(
            conn,
            viewer.principal,
            "delivery.retry",
            "delivery",
            delivery_id,
            {"status": before.status, "attempts": before.attempts, "consumer_id": before.consumer_id},
            {"status": after.status, "requeued": requeued, "consumer_id": after.consumer_id},
        )
        back = str(form.get("back") or "")
        target = back if back.startswith(f"{PATH}/dead") else f"{PATH}/deliveries/{delivery_id}?done=retried"
        return Redirect(target, status_code=HTTP_303_SEE_OTHER)

    # ----- dead letters
    @staticmethod
    def _days(raw: str | None) -> int:
        value = raw or "7"
        if not value.isdigit() or not 1 <= int(value) <= 90:
            raise BadRequest("days must be between 1 and 90")
        return int(value)

    @get("/dead")
    async def dead(
        self, request: Request[Any, Any, Any], state: State, conn: Conn, viewer: NamedDependency[Viewer]
    ) -> Template:
        viewer.require("deliveries:read")
        days = self._days(request.query_params.get("days"))
        since = datetime.now(UTC) - timedelta(days=days)
        groups = await self._data(state).dead_groups(conn, viewer.tenant, since)
        return _page(
            "dead.html",
            viewer,
            groups=groups,
            days=days,
            done=request.query_params.get("done"),
            n=request.query_params.get("n"),
        )

    @staticmethod
    def _dead_retry(webhook_id: int, days: int) -> BulkRetryRequest:
        """A webhook's "retry all" as the API's bulk retry request (``POST /deliveries/bulk-retry``)."""
        since = datetime.now(UTC) - timedelta(days=days)
        return BulkRetryRequest(webhook_id=webhook_id, status=["dead"], created_from=since)

    @get("/dead/confirm")
    async def dead_confirm(
        self, request: Request[Any, Any, Any], state: State, conn: Conn, viewer: NamedDependency[Viewer]
    ) -> Template:
        """Retry all: first the count (the bulk retry's dry run), then a confirmation form that repeats it."""
        viewer.require("deliveries:write")
        q = request.query_params
        days = self._days(q.get("days"))
        webhook_id = _opt_int(q, "webhook_id")
        if webhook_id is None:
            raise BadRequest("webhook_id is required")
        data = self._data(state)
        hook = await data.webhook(conn, viewer.tenant, webhook_id)
        if hook is None:
            raise NotFound(f"webhook {webhook_id} not found")
        count = await data.bulk_retry_count(conn, viewer.tenant, self._dead_retry(webhook_id, days).filters())
        return _page("dead_confirm.html", viewer, hook=hook, days=days, count=count)

    @post("/dead/retry-all", status_code=HTTP_303_SEE_OTHER)
    async def dead_retry_all(
        self, request: Request[Any, Any, Any], state: State, conn: Conn, viewer: NamedDependency[Viewer]
    ) -> Redirect:
        """Start a bulk retry job (the API's) of the webhook's dead letters; on to its progress page."""
        form = await self._form(request, viewer, state)
        viewer.require("deliveries:write")
        days = self._days(str(form.get("days") or ""))
        webhook_id = _opt_int(form, "webhook_id")
        if webhook_id is None:
            raise BadRequest("webhook_id is required")
        data = self._data(state)
        if await data.webhook(conn, viewer.tenant, webhook_id) is None:
            raise NotFound(f"webhook {webhook_id} not found")
        req = self._dead_retry(webhook_id, days)
        filters = req.filters()
        skipped = await data.bulk_retry_skipped(conn, viewer.tenant, filters)
        job = await data.start_bulk_retry(conn, viewer.tenant, filters, viewer.principal.actor)
        await self.audit_log.record(
            conn,
            viewer.principal,
            "bulk_retry.start",
            "bulk_retry",
            job.id,
            None,
            {
                "filters": msgspec.to_builtins(req),
                "total": job.total,
                "skipped_deleted_webhook": skipped,
                "via": "dashboard",
            },
            consumer_id=viewer.tenant,
        )
        return Redirect(f"{PATH}/bulk-retries/{job.id}", status_code=HTTP_303_SEE_OTHER)

    @get("/bulk-retries/{bulk_id:int}")
    async def bulk_retry(
        self, state: State, conn: Conn, viewer: NamedDependency[Viewer], bulk_id: FromPath[int]
    ) -> Template:
        """A bulk retry's progress (``GET /api/whk/bulk-retries/{id}``), refreshed while it runs."""
        viewer.require("deliveries:read")
        job = await self._data(state).bulk_retry(conn, viewer.tenant, bulk_id)
        if job is None:
            raise NotFound(f"bulk retry {bulk_id} not found")
        return _page("bulk_retry.html", viewer, job=job)

    # ----- events, usage, alerts
    @get("/events")
    async def events(self, state: State, conn: Conn, viewer: NamedDependency[Viewer]) -> Template:
        viewer.require("events:read")
        data = self._data(state)
        types = await data.event_types(conn)
        versions = {t.id: await data.events.versions(conn, t.id) for t in types}
        schemas = {
            t.id: [
                (v.major, v.minor, msgspec.json.format(msgspec.json.encode(v.schema), indent=2).decode())
                for v in versions[t.id]
            ]
            for t in types
        }
        tail = await data.tail(conn, viewer.tenant)
        return _page("events.html", viewer, types=types, schemas=schemas, tail=tail)

    @get("/events/tail")
    async def events_tail(self, state: State, conn: Conn, viewer: NamedDependency[Viewer]) -> Template:
        viewer.require("events:read")
        return _page("_tail.html", viewer, tail=await self._data(state).tail(conn, viewer.tenant))

    @get("/usage")
    async def usage(
        self, request: Request[Any, Any, Any], state: State, conn: Conn, viewer: NamedDependency[Viewer]
    ) -> Template:
        viewer.require("monitoring:read")
        days = self._days(request.query_params.get("days") or "28")
        data = self._data(state)
        grid = heat_grid(await data.heatmap(conn, viewer.tenant, days))
        peak = max((n for rows in grid.values() for row in rows for n in row), default=0)
        top = await data.top_consumers(conn, viewer.tenant)
        return _page("usage.html", viewer, grid=grid, peak=peak, top=top, days=days)

    @get("/alerts")
    async def alerts(
        self, request: Request[Any, Any, Any], state: State, conn: Conn, viewer: NamedDependency[Viewer]
    ) -> Template:
        viewer.require("monitoring:read")
        data = self._data(state)
        rows = await data.alerts(conn, viewer.tenant)
        history = await data.alert_history(conn, viewer.tenant)
        slos = await data.slos(conn, viewer.tenant)
        return _page(
            "alerts.html",
            viewer,
            alerts=rows,
            history=history,
            slos=slos,
            silences=_SILENCES,
            done=request.query_params.get("done"),
        )

    @post("/alerts/{alert_id:int}/{action:str}", status_code=HTTP_303_SEE_OTHER)
    async def alert_action(
        self,
        request: Request[Any, Any, Any],
        state: State,
        conn: Conn,
        viewer: NamedDependency[Viewer],
        alert_id: FromPath[int],
        action: FromPath[str],
    ) -> Redirect:
        """Acknowledge or silence an alert through the API's own code (``api.monitoring.actions``): the
        same tenancy, state check (409 page when it is not firing unacknowledged) and audit row."""
        form = await self._form(request, viewer, state)
        viewer.require("monitoring:write")
        repo = self._data(state).monitoring
        if action == "acknowledge":
            await actions.acknowledge_alert(conn, viewer.principal, repo, self.audit_log, alert_id)
        elif action == "silence":
            try:
                silence = msgspec.convert({"duration_s": _opt_int(form, "duration_s")}, Silence)
            except msgspec.ValidationError as exc:
                raise BadRequest(f"duration: {exc}") from None
            await actions.silence_alert(
                conn, viewer.principal, repo, self.audit_log, alert_id, silence.duration_s
            )
        else:
            raise NotFound(f"no action {action!r}")
        return Redirect(f"{PATH}/alerts?done={action}", status_code=HTTP_303_SEE_OTHER)
