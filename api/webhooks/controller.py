"""``/api/whk/webhooks``: register, list, read, change, delete, test-send and read the attempt log.

Tenancy: a consumer credential sees and changes only its own webhooks; another consumer's id is 404
with no side effect. Every mutation writes one audit row in the same transaction.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
import psycopg
from litestar import Controller, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter, SkipValidation
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT
from psycopg import AsyncConnection

from api.audit import AuditLog
from api.context import settings_dependency
from api.deps import Principal, admin_only, require_own_consumer
from api.errors import Conflict, NotFound, Unprocessable
from api.shapes import CursorQ, IdPath, LimitQ
from api.webhooks.repository import WebhookRepository
from api.webhooks.schemas import (
    AttemptPage,
    TestRequest,
    TestResult,
    TraceRequest,
    TraceState,
    Webhook,
    WebhookCreate,
    WebhookCreated,
    WebhookPage,
    WebhookUpdate,
)
from api.webhooks.simulator import send_once
from whk.amqp_url import parse_amqp_target
from whk.queue_targets import QueueUrlError, parse_redis_url
from whk.secretbox import SecretBox, row_aad
from whk.settings import Settings
from whk.signing import decode_secret
from whk.urlpolicy import check_url
from whk.webhook_request import (
    MAX_SIGNING_KEYS,
    RESERVED_HEADERS,
    WebhookRequestError,
    auth_headers,
    custom_headers,
    request_headers,
)

__all__ = ["WebhookController", "check_webhook_fields"]

Conn = NamedDependency[AsyncConnection[Any]]
Who = NamedDependency[Principal]
WebhookSort = Literal["id", "-id", "name", "-name", "created_at", "-created_at", "updated_at", "-updated_at"]


def _audit_view(hook: Webhook) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(hook)
    return out


async def check_webhook_fields(
    conn: AsyncConnection[Any],
    repo: WebhookRepository,
    settings: Settings,
    *,
    url: str | None,
    filter_expr: str | None,
    ordering_key_path: str | None,
    headers: dict[str, str] | None,
    auth_type: str | None,
    auth_header_name: str | None,
    has_credential: bool | None,
    supersede_by_key: bool = False,
    delivery_mode: str | None = None,
) -> None:
    """Semantic checks msgspec cannot express; every problem becomes one pointer in a 422."""
    errors: list[dict[str, str]] = []
    if supersede_by_key and delivery_mode != "delayed":
        # The table's CHECK whk_01_webhooks_supersede_delayed holds the same rule.
        errors.append(
            {
                "pointer": "/supersede_by_key",
                "message": f"supersede_by_key needs delivery_mode delayed (the webhook's is {delivery_mode})",
            }
        )
    if url is not None:
        rule = check_url(url, settings.core.allow_private_cidrs)
        if rule is not None:
            errors.append(
                {"pointer": "/url", "message": f"URL refused by the SSRF policy: {rule}", "rule": rule}
            )
        elif url.lower().startswith(("redis://", "rediss://")):
            try:
                parse_redis_url(url)  # a stream named, maxlen and db within bounds (docs/queues.md)
            except QueueUrlError as exc:
                errors.append({"pointer": "/url", "message": f"Redis target: {exc}"})
        elif url.lower().startswith(("amqp://", "amqps://")):
            try:
                parse_amqp_target(url)  # an exchange named, a valid virtual host (docs/queues.md)
            except QueueUrlError as exc:
                errors.append({"pointer": "/url", "message": f"RabbitMQ target: {exc}"})
    for pointer, expr in (("/filter", filter_expr), ("/ordering_key_path", ordering_key_path)):
        if expr is None:
            continue
        try:
            await repo.compile_jsonpath(conn, expr)
        except psycopg.Error as exc:
            message = exc.diag.message_primary or "invalid SQL/JSON path expression"
            errors.append({"pointer": pointer, "message": message})
    for name in headers or {}:
        if name.lower() in RESERVED_HEADERS:
            errors.append({"pointer": f"/headers/{name}", "message": f"header {name!r} is set by WHK itself"})
    if auth_type == "api_key" and not auth_header_name:
        errors.append({"pointer": "/auth_header_name", "message": "auth_type api_key needs auth_header_name"})
    if auth_type in ("api_key", "bearer", "basic") and has_credential is False:
        errors.append(
            {"pointer": "/auth_credential", "message": f"auth_type {auth_type} needs auth_credential"}
        )
    if auth_type == "none" and has_credential:
        errors.append({"pointer": "/auth_credential", "message": "auth_type none takes no credential"})
    if errors:
        raise Unprocessable("the webhook is not valid", errors=errors)


async def send_test_event(
    conn: AsyncConnection[Any],
    principal: Principal,
    repo: WebhookRepository,
    audit_log: AuditLog,
    settings: Settings,
    secretbox: SecretBox,
    hook: Webhook,
    data: TestRequest,
) -> TestResult:
    """Send one signed synthetic event to ``hook`` now and audit it (``webhook.test``); shared by
    ``POST /webhooks/{id}/test`` and the dashboard's "send test event". The request is a delivery's
    (``whk/webhook_request.py`` headers, the ``whk.event_envelope`` body, the dispatcher's User-Agent);
    only its ``webhook-id`` says it is a test, so a receiver never takes it for a real event."""
    payload_data = data.data
    if payload_data is None:
        example = await repo.event_example(conn, data.event_type)
        payload_data = example if isinstance(example, dict) else {"test": True, "webhook_id": hook.id}
    body = await repo.test_envelope(conn, data.event_type, payload_data)
    msg_id = f"msg_test_{uuid.uuid4().hex}"
    keys = (await repo.valid_keys(conn, hook.id))[:MAX_SIGNING_KEYS]
    secrets = []
    for key in keys:
        plain = secretbox.decrypt(key.secret_enc, row_id=row_aad("webhook_secrets", key.id))
        secrets.append(decode_secret(plain.decode()))
    credential = None
    if hook.auth_type != "none" and hook.has_credential:
        credential = await repo.credential(conn, secretbox, hook.id)
    try:
        fixed = custom_headers(hook.id, hook.headers)
        if credential is not None:
            fixed += auth_headers(hook.id, hook.auth_type, hook.auth_header_name, credential)
    except WebhookRequestError as exc:
        raise Unprocessable(str(exc)) from exc
    headers = request_headers(
        msg_id=msg_id,
        timestamp=int(time.time()),
        body=body,
        signing_keys=secrets,
        fixed_headers=fixed,
        user_agent=settings.dispatcher.user_agent,
    )
    result = await send_once(
        url=hook.url,
        method=hook.http_method,
        headers=headers,
        body=body,
        timeout_s=hook.timeout_ms / 1000,
        allow=settings.core.allow_private_cidrs,
    )
    outcome = TestResult(
        event_type=data.event_type,
        webhook_id_header=msg_id,
        url=hook.url,
        status=result.status,
        ok=result.status is not None and 200 <= result.status < 300,
        duration_ms=round(result.duration_ms, 3),
        response_headers=result.headers,
        response_excerpt=result.excerpt.decode("utf-8", errors="replace"),
        response_truncated=result.truncated,
        error_class=result.error_class,
        error_detail=result.error_detail,
        signed_with=[k.key_id for k in keys],
    )
    await audit_log.record(
        conn,
        principal,
        "webhook.test",
        "webhook",
        hook.id,
        None,
        {
            "consumer_id": hook.consumer_id,
            "event_type": data.event_type,
            "status": result.status,
            "error_class": result.error_class,
            "duration_ms": outcome.duration_ms,
        },
    )
    return outcome


class WebhookController(Controller):
    path = "/api/whk/webhooks"
    tags = ["webhooks"]  # noqa: RUF012 - Litestar reads a class attribute
    dependencies = settings_dependency()

    def __init__(self, owner: Any) -> None:
        super().__init__(owner)
        self.repo = WebhookRepository()
        self.audit_log = AuditLog()

    @get("/", operation_id="listWebhooks", summary="List webhooks (keyset pagination)")
    async def list_webhooks(
        self,
        conn: Conn,
        principal: Who,
        status: Annotated[Literal["active", "paused", "disabled"] | None, QueryParameter()] = None,
        consumer_id: Annotated[int | None, QueryParameter(ge=1, le=9223372036854775807)] = None,
        event_type: Annotated[str | None, QueryParameter(max_length=200)] = None,
        name_prefix: Annotated[str | None, QueryParameter(max_length=200)] = None,
        delivery_mode: Annotated[
            Literal["immediate", "batch", "delayed", "ordered"] | None, QueryParameter()
        ] = None,
        quarantined: Annotated[bool | None, QueryParameter()] = None,
        created_from: Annotated[datetime | None, QueryParameter()] = None,
        created_to: Annotated[datetime | None, QueryParameter()] = None,
        sort: Annotated[WebhookSort, QueryParameter()] = "-id",
        cursor: CursorQ = None,
        limit: LimitQ = 50,
    ) -> WebhookPage:
        require_own_consumer(principal, consumer_id)
        filters = {
            "status": status,
            "consumer_id": consumer_id,
            "event_type": event_type,
            "name_prefix": name_prefix,
            "delivery_mode": delivery_mode,
            "quarantined": quarantined,
            "created_from": created_from,
            "created_to": created_to,
        }
        items, nxt = await self.repo.listing.page(
            conn, tenant=principal.tenant_filter(), filters=filters, sort=sort, cursor=cursor, limit=limit
        )
        return WebhookPage(items=items, next_cursor=nxt)

    @get("/{webhook_id:int}", operation_id="getWebhook", summary="Read one webhook")
    async def get_webhook(self, conn: Conn, principal: Who, webhook_id: IdPath) -> Webhook:
        hook = await self.repo.get(conn, tenant=principal.tenant_filter(), webhook_id=webhook_id)
        if hook is None:
            raise NotFound(f"webhook {webhook_id} not found")
        return hook

    @post(
        "/",
        operation_id="createWebhook",
        summary="Register a webhook; the signing secret is shown once",
        status_code=HTTP_201_CREATED,
    )
    async def create_webhook(
        self,
        conn: Conn,
        principal: Who,
        settings: NamedDependency[SkipValidation[Settings]],
        secretbox: NamedDependency[SecretBox],
        data: JSONBody[WebhookCreate],
    ) -> WebhookCreated:
        tenant = principal.tenant_filter()
        if tenant is None:
            if data.consumer_id is None:
                raise Unprocessable(
                    "consumer_id is required",
                    errors=[{"pointer": "/consumer_id", "message": "required for admins"}],
                )
            consumer_id = data.consumer_id
        else:
            require_own_consumer(principal, data.consumer_id)
            consumer_id = tenant
        if not await self.repo.consumer_exists(conn, consumer_id):
            raise NotFound(f"consumer {consumer_id} not found")
        await check_webhook_fields(
            conn,
            self.repo,
            settings,
            url=data.url,
            filter_expr=data.filter,
            ordering_key_path=data.ordering_key_path,
            headers=data.headers,
            auth_type=data.auth_type,
            auth_header_name=data.auth_header_name,
            has_credential=data.auth_credential is not None,
            supersede_by_key=data.supersede_by_key,
            delivery_mode=data.delivery_mode,
        )
        webhook_id, key_id, secret = await self.repo.create(
            conn, secretbox, consumer_id=consumer_id, data=data
        )
        hook = await self.repo.get(conn, tenant=None, webhook_id=webhook_id)
        assert hook is not None
        await self.audit_log.record(
            conn,
            principal,
            "webhook.create",
            "webhook",
            webhook_id,
            None,
            {**_audit_view(hook), "key_id": key_id},
        )
        return WebhookCreated(webhook=hook, signing_secret=secret, key_id=key_id)

    @put("/{webhook_id:int}", operation_id="updateWebhook", summary="Change a webhook (fields present only)")
    async def update_webhook(
        self,
        conn: Conn,
        principal: Who,
        settings: NamedDependency[SkipValidation[Settings]],
        secretbox: NamedDependency[SecretBox],
        webhook_id: IdPath,
        data: JSONBody[WebhookUpdate],
    ) -> Webhook:
        before = await self.repo.get(conn, tenant=principal.tenant_filter(), webhook_id=webhook_id, lock=True)
        if before is None:
            raise NotFound(f"webhook {webhook_id} not found")
        unset = msgspec.UNSET
        auth_type = before.auth_type if data.auth_type is unset else data.auth_type
        clear_credential = auth_type == "none" and data.auth_credential is unset and before.has_credential
        if data.auth_credential is unset:
            has_credential = before.has_credential and not clear_credential
        else:
            has_credential = data.auth_credential is not None
        header_name = before.auth_header_name if data.auth_header_name is unset else data.auth_header_name
        await check_webhook_fields(
            conn,
            self.repo,
            settings,
            url=None if data.url is unset else data.url,
            filter_expr=None if data.filter is unset else data.filter,
            ordering_key_path=None if data.ordering_key_path is unset else data.ordering_key_path,
            headers=None if data.headers is unset else data.headers,
            auth_type=str(auth_type),
            auth_header_name=None if header_name is None else str(header_name),
            has_credential=has_credential,
            supersede_by_key=before.supersede_by_key
            if data.supersede_by_key is unset
            else data.supersede_by_key,
            delivery_mode=before.delivery_mode if data.delivery_mode is unset else data.delivery_mode,
        )
        await self.repo.update(conn, secretbox, webhook_id=webhook_id, data=data)
        if clear_credential:
            await self.repo.set_credential(conn, secretbox, webhook_id, None)
        if data.status is not unset and data.status != before.status:
            await self.repo.set_status(conn, webhook_id, str(data.status))
        after = await self.repo.get(conn, tenant=None, webhook_id=webhook_id)
        assert after is not None
        await self.audit_log.record(
            conn, principal, "webhook.update", "webhook", webhook_id, _audit_view(before), _audit_view(after)
        )
        return after

    @delete(
        "/{webhook_id:int}",
        operation_id="deleteWebhook",
        summary="Delete a webhook (unfinished deliveries are cancelled)",
        status_code=HTTP_204_NO_CONTENT,
    )
    async def delete_webhook(self, conn: Conn, principal: Who, webhook_id: IdPath) -> None:
        before = await self.repo.get(conn, tenant=principal.tenant_filter(), webhook_id=webhook_id, lock=True)
        if before is None:
            raise NotFound(f"webhook {webhook_id} not found")
        cancelled = await self.repo.delete(conn, webhook_id)
        await self.audit_log.record(
            conn,
            principal,
            "webhook.delete",
            "webhook",
            webhook_id,
            _audit_view(before),
            {"deleted": True, "cancelled_deliveries": cancelled, "consumer_id": before.consumer_id},
        )

    @post(
        "/{webhook_id:int}/clear-quarantine",
        operation_id="clearWebhookQuarantine",
        summary="Lift the webhook's quarantine once its cause is fixed (admins); 409 if not quarantined",
        status_code=HTTP_200_OK,
        guards=[admin_only],
    )
    async def clear_quarantine(self, conn: Conn, principal: Who, webhook_id: IdPath) -> Webhook:
        before = await self.repo.get(conn, tenant=None, webhook_id=webhook_id, lock=True)
        if before is None:
            raise NotFound(f"webhook {webhook_id} not found")
        if not await self.repo.clear_quarantine(conn, webhook_id):
            raise Conflict(f"webhook {webhook_id} is not quarantined")
        after = await self.repo.get(conn, tenant=None, webhook_id=webhook_id)
        assert after is not None
        await self.audit_log.record(
            conn,
            principal,
            "webhook.quarantine_cleared",
            "webhook",
            webhook_id,
            {
                "quarantined_at": before.quarantined_at,
                "quarantine_stage": before.quarantine_stage,
                "quarantine_sqlstate": before.quarantine_sqlstate,
                "quarantine_reason": before.quarantine_reason,
                "consumer_id": before.consumer_id,
            },
            {"quarantined_at": None, "consumer_id": before.consumer_id},
        )
        return after

    @post(
        "/{webhook_id:int}/trace",
        operation_id="traceWebhook",
        summary="Log this webhook's deliveries in detail for a while (admins): WHK_DEBUG for one webhook",
        status_code=HTTP_200_OK,
        guards=[admin_only],
    )
    async def trace_webhook(
        self, conn: Conn, principal: Who, webhook_id: IdPath, data: JSONBody[TraceRequest]
    ) -> TraceState:
        before = await self.repo.get(conn, tenant=None, webhook_id=webhook_id, lock=True)
        if before is None:
            raise NotFound(f"webhook {webhook_id} not found")
        until = await self.repo.trace(conn, webhook_id, data.seconds)
        await self.audit_log.record(
            conn,
            principal,
            "webhook.trace",
            "webhook",
            webhook_id,
            None,
            {"seconds": data.seconds, "trace_until": until, "consumer_id": before.consumer_id},
        )
        return TraceState(webhook_id=webhook_id, trace_until=until)

    @post(
        "/{webhook_id:int}/test",
        operation_id="testWebhook",
        summary="Send a signed synthetic event to the endpoint now",
        status_code=HTTP_200_OK,
    )
    async def test_webhook(
        self,
        conn: Conn,
        principal: Who,
        settings: NamedDependency[SkipValidation[Settings]],
        secretbox: NamedDependency[SecretBox],
        webhook_id: IdPath,
        data: JSONBody[TestRequest],
    ) -> TestResult:
        hook = await self.repo.get(conn, tenant=principal.tenant_filter(), webhook_id=webhook_id)
        if hook is None:
            raise NotFound(f"webhook {webhook_id} not found")
        return await send_test_event(
            conn, principal, self.repo, self.audit_log, settings, secretbox, hook, data
        )

    @get("/{webhook_id:int}/logs", operation_id="webhookLogs", summary="Delivery attempts of a webhook")
    async def webhook_logs(
        self,
        conn: Conn,
        principal: Who,
        webhook_id: IdPath,
        delivery_id: Annotated[int | None, QueryParameter(ge=1, le=9223372036854775807)] = None,
        outcome: Annotated[str | None, QueryParameter(max_length=50, pattern=r"^[a-z_]+$")] = None,
        status_code: Annotated[int | None, QueryParameter(ge=100, le=599)] = None,
        error_class: Annotated[str | None, QueryParameter(max_length=50, pattern=r"^[a-z_]+$")] = None,
        started_from: Annotated[datetime | None, QueryParameter()] = None,
        started_to: Annotated[datetime | None, QueryParameter()] = None,
        cursor: CursorQ = None,
        limit: LimitQ = 50,
    ) -> AttemptPage:
        hook = await self.repo.get(conn, tenant=principal.tenant_filter(), webhook_id=webhook_id)
        if hook is None:
            raise NotFound(f"webhook {webhook_id} not found")
        filters = {
            "webhook_id": webhook_id,
            "delivery_id": delivery_id,
            "outcome": outcome,
            "status_code": status_code,
            "error_class": error_class,
            "started_from": started_from,
            "started_to": started_to,
        }
        items, nxt = await self.repo.attempt_log.page(
            conn, filters=filters, sort="-id", cursor=cursor, limit=limit
        )
        return AttemptPage(items=items, next_cursor=nxt)
