"""``/api/whk/security``: signing keys (ids and lifetimes, never secrets), key rotation with a grace
period, the audit trail, and the payload inspector/validator (schema + Standard Webhooks signature).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK
from psycopg import AsyncConnection

from api.audit import AuditFilter, AuditLog, AuditRow
from api.deps import Principal, require_own_consumer
from api.errors import NotFound, Unprocessable
from api.events.repository import EventRepository
from api.events.validation import schema_errors
from api.security.repository import SecurityRepository
from api.security.schemas import (
    RotateRequest,
    RotateResult,
    SigningKeyList,
    ValidateRequest,
    ValidateResult,
    ValidationIssue,
)
from api.webhooks.repository import WebhookRepository
from whk.secretbox import SecretBox, SecretDecryptError, row_aad
from whk.signing import SigningError, decode_secret, verify

__all__ = ["SecurityController"]

Conn = NamedDependency[AsyncConnection[Any]]
Who = NamedDependency[Principal]
DEFAULT_GRACE_HOURS = 24.0
DEFAULT_MAX_OLD_KEYS = 10
_HEADER_POINTER = {
    "msg_id": "/headers/webhook-id",
    "timestamp": "/headers/webhook-timestamp",
    "timestamp_too_old": "/headers/webhook-timestamp",
    "timestamp_too_new": "/headers/webhook-timestamp",
    "no_signature": "/headers/webhook-signature",
    "no_match": "/headers/webhook-signature",
    "no_secret": "/secret",
}


class AuditPage(msgspec.Struct, kw_only=True):
    items: list[AuditRow]
    next_before_id: int | None


class SecurityController(Controller):
    path = "/api/whk/security"
    tags = ["security"]  # noqa: RUF012 - Litestar reads a class attribute

    def __init__(self, owner: Any) -> None:
        super().__init__(owner)
        self.repo = SecurityRepository()
        self.webhooks = WebhookRepository()
        self.audit_log = AuditLog()
        self.events = EventRepository()

    @get("/signatures", operation_id="listSigningKeys", summary="Signing keys: ids, created, expiry")
    async def signatures(
        self,
        conn: Conn,
        principal: Who,
        webhook_id: Annotated[int | None, QueryParameter(ge=1, le=9223372036854775807)] = None,
        include_expired: Annotated[bool, QueryParameter()] = False,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 200,
    ) -> SigningKeyList:
        tenant = principal.tenant_filter()
        if (
            webhook_id is not None
            and await self.webhooks.get(conn, tenant=tenant, webhook_id=webhook_id) is None
        ):
            raise NotFound(f"webhook {webhook_id} not found")
        items = await self.repo.keys(
            conn, tenant=tenant, webhook_id=webhook_id, include_expired=include_expired, limit=limit
        )
        return SigningKeyList(items=items)

    @post(
        "/rotate-key",
        operation_id="rotateSigningKey",
        summary="Rotate a webhook's signing secret (new one shown once; old ones valid for a grace period)",
        status_code=HTTP_200_OK,
    )
    async def rotate_key(
        self,
        conn: Conn,
        principal: Who,
        secretbox: NamedDependency[SecretBox],
        data: JSONBody[RotateRequest],
    ) -> RotateResult:
        hook = await self.webhooks.get(
            conn, tenant=principal.tenant_filter(), webhook_id=data.webhook_id, lock=True
        )
        if hook is None:
            raise NotFound(f"webhook {data.webhook_id} not found")
        grace_h = data.grace_hours
        if grace_h is None:
            grace_h = await self.repo.setting(conn, "security.rotation_grace_hours", DEFAULT_GRACE_HOURS)
        max_old = int(await self.repo.setting(conn, "security.max_old_keys", DEFAULT_MAX_OLD_KEYS))
        before = await self.repo.keys(
            conn, tenant=None, webhook_id=hook.id, include_expired=False, limit=1000
        )
        graced = await self.repo.start_grace(conn, hook.id, grace_h * 3600)
        key_id, secret = await self.webhooks.add_secret(conn, secretbox, hook.id)
        capped = await self.repo.cap_old_keys(conn, hook.id, max_old)
        valid = await self.repo.keys(conn, tenant=None, webhook_id=hook.id, include_expired=False, limit=1000)
        grace_until = max((k.expires_at for k in valid if k.expires_at is not None), default=None)
        await self.audit_log.record(
            conn,
            principal,
            "webhook.secret_rotate",
            "webhook",
            hook.id,
            {"consumer_id": hook.consumer_id, "valid_key_ids": [k.key_id for k in before]},
            {
                "consumer_id": hook.consumer_id,
                "new_key_id": key_id,
                "grace_hours": grace_h,
                "grace_key_ids": graced,
                "expired_key_ids": capped,
                "valid_key_ids": [k.key_id for k in valid],
            },
        )
        return RotateResult(
            webhook_id=hook.id,
            key_id=key_id,
            signing_secret=secret,
            grace_until=grace_until,
            valid_keys=valid,
        )

    @get("/audit", operation_id="listAudit", summary="Audit trail (newest first, filters)")
    async def audit(
        self,
        conn: Conn,
        principal: Who,
        consumer_id: Annotated[int | None, QueryParameter(ge=1, le=9223372036854775807)] = None,
        actor: Annotated[str | None, QueryParameter(max_length=200)] = None,
        action: Annotated[str | None, QueryParameter(max_length=100, pattern=r"^[a-z0-9_.*]+$")] = None,
        target_type: Annotated[str | None, QueryParameter(max_length=100)] = None,
        target_id: Annotated[str | None, QueryParameter(max_length=200)] = None,
        request_id: Annotated[str | None, QueryParameter(max_length=128)] = None,
        since: Annotated[datetime | None, QueryParameter()] = None,
        until: Annotated[datetime | None, QueryParameter()] = None,
        before_id: Annotated[int | None, QueryParameter(ge=1, le=9223372036854775807)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> AuditPage:
        require_own_consumer(principal, consumer_id)
        flt = AuditFilter(
            consumer_id=consumer_id,
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=target_id,
            request_id=request_id,
            since=since,
            until=until,
            before_id=before_id,
            limit=limit + 1,
        )
        rows = await self.audit_log.page(conn, principal, flt)
        more = len(rows) > limit
        rows = rows[:limit]
        return AuditPage(items=rows, next_before_id=rows[-1].id if more and rows else None)

    @post(
        "/validate",
        operation_id="validatePayload",
        summary="Check a payload against its event type's schema and, optionally, its signature",
        status_code=HTTP_200_OK,
    )
    async def validate(
        self,
        conn: Conn,
        principal: Who,
        secretbox: NamedDependency[SecretBox],
        data: JSONBody[ValidateRequest],
    ) -> ValidateResult:
        errors: list[dict[str, str]] = []
        payload = data.payload
        raw: bytes | None = None
        if data.body is not None:
            raw = data.body.encode()
            if payload is None:
                try:
                    payload = msgspec.json.decode(raw)
                except msgspec.DecodeError as exc:
                    errors.append({"pointer": "/body", "message": f"not JSON: {exc}"})
        if payload is None and data.body is None:
            raise Unprocessable(
                "nothing to validate", errors=[{"pointer": "/payload", "message": "give payload or body"}]
            )
        event_type = data.event_type
        data_value: Any = payload
        data_prefix = "/payload" if data.body is None else "/body"
        if isinstance(payload, dict) and "data" in payload and "type" in payload:
            # a full envelope
            envelope_type = payload.get("type")
            if event_type is None and isinstance(envelope_type, str):
                event_type = envelope_type
            elif event_type is not None and envelope_type != event_type:
                errors.append({"pointer": f"{data_prefix}/type", "message": f"expected {event_type!r}"})
            if not isinstance(payload.get("timestamp"), str):
                errors.append(
                    {"pointer": f"{data_prefix}/timestamp", "message": "expected an ISO 8601 string"}
                )
            data_value = payload["data"]
            data_prefix += "/data"
        schema_version: str | None = None
        if event_type is None:
            errors.append({"pointer": "/event_type", "message": "unknown: give event_type or an envelope"})
        elif payload is not None:
            found = await self.events.schema(conn, event_type, data.version)
            if found is None:
                errors.append(
                    {
                        "pointer": "/event_type",
                        "message": f"no schema for {event_type} (version {data.version})",
                    }
                )
            else:
                schema_version, schema = found
                errors += schema_errors(schema, data_value, prefix=data_prefix)

        signature_valid: bool | None = None
        if data.headers is not None:
            signature_valid = await self._check_signature(
                conn, principal, secretbox, data, raw, payload, errors
            )
        return ValidateResult(
            valid=not errors,
            event_type=event_type,
            schema_version=schema_version,
            signature_checked=data.headers is not None,
            signature_valid=signature_valid,
            errors=[ValidationIssue(pointer=e["pointer"], message=e["message"]) for e in errors],
        )

    async def _check_signature(
        self,
        conn: AsyncConnection[Any],
        principal: Principal,
        box: SecretBox,
        data: ValidateRequest,
        raw: bytes | None,
        payload: Any,
        errors: list[dict[str, str]],
    ) -> bool:
        assert data.headers is not None
        secrets: list[bytes] = []
        if data.secret is not None:
            try:
                secrets.append(decode_secret(data.secret))
            except SigningError as exc:
                errors.append({"pointer": "/secret", "message": exc.message})
                return False
        elif data.webhook_id is not None:
            hook = await self.webhooks.get(conn, tenant=principal.tenant_filter(), webhook_id=data.webhook_id)
            if hook is None:
                raise NotFound(f"webhook {data.webhook_id} not found")
            for key in await self.webhooks.valid_keys(conn, hook.id):
                try:
                    plain = box.decrypt(key.secret_enc, row_id=row_aad("webhook_secrets", key.id))
                except SecretDecryptError:
                    errors.append({"pointer": "/webhook_id", "message": f"key {key.key_id} does not decrypt"})
                    continue
                secrets.append(decode_secret(plain.decode()))
        else:
            errors.append(
                {"pointer": "/secret", "message": "give secret or webhook_id to check the signature"}
            )
            return False
        if raw is None:
            # Without the raw body the signature can only be checked against msgspec's compact encoding.
            raw = msgspec.json.encode(payload)
        try:
            verify(
                secrets,
                data.headers.webhook_id_header,
                data.headers.webhook_timestamp,
                raw,
                data.headers.webhook_signature,
                now=int(time.time()),
                tolerance=data.tolerance_s,
            )
        except SigningError as exc:
            errors.append({"pointer": _HEADER_POINTER.get(exc.reason, "/headers"), "message": exc.message})
            return False
        return True
