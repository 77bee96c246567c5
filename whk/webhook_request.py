"""One webhook request's headers, built the same way by everyone who sends one.

The dispatcher (``dispatcher/request.py``: every delivery, sent with aiohttp) and the API's test send
(``api.webhooks.controller.send_test_event``: ``POST /webhooks/{id}/test`` and the dashboard, sent with
httpx) build their headers here; the two transports stay separate. The body is the event's envelope
``{"type", "timestamp", "data"}`` as ``whk.event_envelope`` renders it in SQL, for both.

Order of the headers: ``Content-Type``, ``User-Agent``, the Standard Webhooks trio (``webhook-id``,
``webhook-timestamp``, ``webhook-signature``; an unsigned webhook still gets the id and timestamp), the
webhook's custom headers, then its outbound auth. Custom headers may not set what WHK sets itself
(``RESERVED_HEADERS``: they are skipped), nor carry CR, LF or NUL.

Pure: no I/O, no clock (the caller passes the timestamp); secrets arrive decrypted.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Final

from whk.errors import WhkError
from whk.signing import signature_headers

__all__ = [
    "MAX_SIGNING_KEYS",
    "RESERVED_HEADERS",
    "WebhookRequestError",
    "auth_headers",
    "custom_headers",
    "request_headers",
]

# At most the current key plus ten old ones sign during a rotation grace period.
MAX_SIGNING_KEYS: Final = 11

# Headers a webhook's custom headers may never set: transport framing and the signature contract.
RESERVED_HEADERS: Final = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "user-agent",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)


class WebhookRequestError(WhkError):
    """A webhook's stored headers or outbound auth cannot be used as they are."""


def custom_headers(webhook_id: int, headers: Mapping[str, object]) -> list[tuple[str, str]]:
    """The webhook's own headers that may be sent (reserved names skipped); bad ones raise."""
    out: list[tuple[str, str]] = []
    for name, value in headers.items():
        if not isinstance(value, str):
            raise WebhookRequestError(f"header {name!r} of webhook {webhook_id} is not a string")
        if name.lower() in RESERVED_HEADERS:
            continue
        if any(c in name + value for c in "\r\n\0") or not name.isascii():
            raise WebhookRequestError(
                f"header {name!r} of webhook {webhook_id} contains forbidden characters"
            )
        out.append((name, value))
    return out


def auth_headers(
    webhook_id: int, auth_type: str, header_name: str | None, credential: str | None
) -> list[tuple[str, str]]:
    """The outbound auth header (none for ``auth_type`` none): Bearer, Basic or an API key header."""
    if auth_type == "none":
        return []
    if credential is None:
        raise WebhookRequestError(f"webhook {webhook_id} uses {auth_type} auth but has no credential")
    if auth_type == "bearer":
        return [("Authorization", f"Bearer {credential}")]
    if auth_type == "basic":
        return [("Authorization", "Basic " + base64.b64encode(credential.encode("utf-8")).decode("ascii"))]
    if auth_type == "api_key":
        return [(header_name or "X-API-Key", credential)]
    raise WebhookRequestError(f"webhook {webhook_id} has unknown auth type {auth_type!r}")


def request_headers(
    *,
    msg_id: str,
    timestamp: int,
    body: bytes,
    signing_keys: Sequence[bytes],
    fixed_headers: Sequence[tuple[str, str]],
    user_agent: str,
) -> list[tuple[str, str]]:
    """Every header of one request. ``signing_keys``: at most ``MAX_SIGNING_KEYS``, newest first;
    ``fixed_headers``: ``custom_headers`` + ``auth_headers`` (the same for every request of a webhook,
    so callers compute them once)."""
    headers: list[tuple[str, str]] = [("Content-Type", "application/json"), ("User-Agent", user_agent)]
    if signing_keys:
        headers += signature_headers(signing_keys, msg_id, timestamp, body)
    else:  # an unsigned webhook (no secret configured) still gets a stable id and a timestamp
        headers += (("webhook-id", msg_id), ("webhook-timestamp", str(timestamp)))
    if fixed_headers:
        headers += fixed_headers
    return headers
