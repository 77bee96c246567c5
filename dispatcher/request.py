"""Build the HTTP request of one attempt: body, Standard Webhooks headers, custom headers, outbound auth
(the headers themselves are ``whk/webhook_request.py``'s, shared with the API's test send).

Pure except for decryption (done once per webhook in ``prepare_webhook``, not per request). The
signature is computed per attempt with a fresh ``webhook-timestamp``; ``webhook-id`` is the event id
(or the batch id for batch requests), so it stays the same across retries and manual replays.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from dispatcher.attempt import OutboundRequest
from dispatcher.errors import UnsignedRequestRefused, WebhookConfigError
from dispatcher.models import ClaimedDelivery, WebhookRow
from dispatcher.retry import RetryPolicy, RetryPolicyError
from whk.redact import looks_secret, mask_headers
from whk.secretbox import SecretBox, SecretBoxError, row_aad
from whk.signing import SigningError, decode_secret
from whk.webhook_request import (
    MAX_SIGNING_KEYS,
    WebhookRequestError,
    auth_headers,
    custom_headers,
    request_headers,
)


@dataclass(frozen=True, slots=True)
class PreparedWebhook:
    """A webhook's delivery settings with secrets decrypted, ready for many requests."""

    row: WebhookRow
    signing_keys: tuple[bytes, ...]
    fixed_headers: tuple[tuple[str, str], ...]
    masked_names: frozenset[str]
    retry_policy: RetryPolicy
    config_error: str | None = None


def _auth_headers(row: WebhookRow, box: SecretBox | None) -> list[tuple[str, str]]:
    credential = None
    if row.auth_type != "none" and row.auth_credential_enc is not None:
        if box is None:
            raise WebhookConfigError("WHK_SECRET_KEYS is not set: stored credentials cannot be decrypted")
        aad = row_aad("whk_01_webhooks", row.id)
        credential = box.decrypt(row.auth_credential_enc, row_id=aad).decode("utf-8")
    return auth_headers(row.id, row.auth_type, row.auth_header_name, credential)


def prepare_webhook(row: WebhookRow, box: SecretBox | None) -> PreparedWebhook:
    """Decrypt and validate once; a broken configuration becomes ``config_error`` (attempts fail with it).
    ``row.retry_policy`` is the effective policy (whk.effective_retry_policy: global setting + override)."""
    try:
        policy = RetryPolicy.from_json(row.retry_policy)
    except (RetryPolicyError, ValueError) as exc:
        # Unreadable (only possible with the bounds' CHECKs dropped): no schedule, the failure is final.
        return PreparedWebhook(row, (), (), frozenset(), RetryPolicy(), config_error=f"retry_policy: {exc}")
    try:
        keys: list[bytes] = []
        for secret_id, blob in list(zip(row.secret_ids, row.secrets_enc, strict=True))[:MAX_SIGNING_KEYS]:
            if box is None:
                raise WebhookConfigError("WHK_SECRET_KEYS is not set: signing secrets cannot be decrypted")
            plain = box.decrypt(blob, row_id=row_aad("webhook_secrets", secret_id))
            keys.append(decode_secret(plain.decode("utf-8")))
        if not keys:
            # Never unsigned: the webhook waits for a secret (whk_01_webhooks.needs_secret_since).
            raise UnsignedRequestRefused(
                f"webhook {row.id} has no valid signing secret: nothing is sent unsigned (the job worker, "
                "or `whk webhooks provision-secrets`, gives it one)"
            )
        auth = _auth_headers(row, box)
        custom = custom_headers(row.id, row.headers)
    except (WebhookConfigError, WebhookRequestError, SecretBoxError, SigningError, UnicodeDecodeError) as exc:
        return PreparedWebhook(row, (), (), frozenset(), policy, config_error=str(exc))
    masked = frozenset({n.lower() for n, _ in auth} | {n.lower() for n, _ in custom if looks_secret(n)})
    return PreparedWebhook(row, tuple(keys), tuple(custom + auth), masked, policy)


def message_id(group: Sequence[ClaimedDelivery]) -> str:
    """``webhook-id``: the event id for one event, the batch id for a batch request."""
    first = group[0]
    if first.batch_id is not None:
        return f"batch_{first.batch_id.hex}"
    return f"msg_{first.event_id.hex}"


def event_message_id(event_id: uuid.UUID) -> str:
    return f"msg_{event_id.hex}"


def request_body(group: Sequence[ClaimedDelivery]) -> bytes:
    """One event's envelope, or a JSON array of envelopes in commit order for a batch."""
    if group[0].batch_id is None:
        return group[0].payload.encode("utf-8")
    return b"[" + b",".join(d.payload.encode("utf-8") for d in group) + b"]"


def build_request(
    hook: PreparedWebhook,
    *,
    msg_id: str,
    body: bytes,
    timestamp: int,
    deadline_s: float,
    user_agent: str,
    max_body_bytes: int | None = None,
) -> OutboundRequest:
    """The signed request of one attempt. Raises ``UnsignedRequestRefused`` when the webhook has no
    signing key: nothing goes on the wire without a ``webhook-signature``."""
    if not hook.signing_keys or hook.config_error is not None:
        raise UnsignedRequestRefused(
            f"webhook {hook.row.id}: refusing to build a request without a webhook-signature"
            + (f" ({hook.config_error})" if hook.config_error else "")
        )
    headers = request_headers(
        msg_id=msg_id,
        timestamp=timestamp,
        body=body,
        signing_keys=hook.signing_keys,
        fixed_headers=hook.fixed_headers,
        user_agent=user_agent,
    )
    if not any(name == "webhook-signature" and value for name, value in headers):
        raise UnsignedRequestRefused(f"webhook {hook.row.id}: the signature header came out empty")
    return OutboundRequest(
        method=hook.row.http_method,
        url=hook.row.url,
        headers=headers,
        body=body,
        deadline_s=deadline_s,
        max_body_bytes=max_body_bytes,
    )


def loggable_headers(hook: PreparedWebhook, headers: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Request headers for the attempt log, with credentials masked (``whk.redact``: the rule the
    development mock endpoints store received headers by)."""
    return mask_headers(headers, credential_names=hook.masked_names)


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
