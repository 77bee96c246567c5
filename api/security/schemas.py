"""Wire shapes of signing-key management, the audit view and the payload validator."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from api.shapes import EVENT_TYPE_RE


class SigningKeyInfo(msgspec.Struct, kw_only=True):
    """A signing key's identity and lifetime (never the secret)."""

    key_id: str
    webhook_id: int
    consumer_id: int
    created_at: datetime
    expires_at: datetime | None
    state: Literal["current", "grace", "expired"]


class SigningKeyList(msgspec.Struct, kw_only=True):
    items: list[SigningKeyInfo]


class RotateRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Rotate a webhook's signing secret. The old key keeps signing for ``grace_hours`` (default from
    'security.rotation_grace_hours', 24); ``0`` revokes it at once (leaked secret)."""

    webhook_id: Annotated[int, Meta(ge=1, le=9223372036854775807)]
    grace_hours: Annotated[float, Meta(ge=0, le=720)] | None = None


class RotateResult(msgspec.Struct, kw_only=True):
    """The new secret, shown this once, and the old keys still signing until they expire."""

    webhook_id: int
    key_id: str
    signing_secret: str
    grace_until: datetime | None
    valid_keys: list[SigningKeyInfo]


class SignatureInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The three Standard Webhooks headers as received, plus the secret to check them with: either a
    ``secret`` (whsec_…) or ``webhook_id`` (its currently valid keys, yours only)."""

    webhook_id_header: Annotated[str, Meta(max_length=255)] = msgspec.field(name="webhook-id")
    webhook_timestamp: Annotated[str, Meta(max_length=32)] = msgspec.field(name="webhook-timestamp")
    webhook_signature: Annotated[str, Meta(max_length=8192)] = msgspec.field(name="webhook-signature")


class ValidateRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Inspect a payload: ``body`` is the raw request body as received (needed for signatures), or give
    the parsed ``payload`` (an envelope ``{"type", "timestamp", "data"}`` or just the data with
    ``event_type``). ``headers`` + ``secret``/``webhook_id`` also check the signature."""

    event_type: Annotated[str, Meta(pattern=EVENT_TYPE_RE, max_length=200)] | None = None
    version: Annotated[int, Meta(ge=1, le=1000)] | None = None
    payload: Any = None
    body: Annotated[str, Meta(max_length=1_000_000)] | None = None
    headers: SignatureInput | None = None
    secret: Annotated[str, Meta(max_length=200)] | None = None
    webhook_id: Annotated[int, Meta(ge=1, le=9223372036854775807)] | None = None
    tolerance_s: Annotated[int, Meta(ge=0, le=86400 * 365)] = 300


class ValidationIssue(msgspec.Struct, kw_only=True):
    pointer: str
    message: str


class ValidateResult(msgspec.Struct, kw_only=True):
    valid: bool
    event_type: str | None
    schema_version: str | None
    signature_checked: bool
    signature_valid: bool | None
    errors: list[ValidationIssue]
