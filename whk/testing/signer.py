"""Sign a payload exactly as WHK's dispatcher does (the same ``whk.signing`` code), to test a receiver."""

from __future__ import annotations

import secrets as _secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from whk.signing import decode_secret, signature_headers

__all__ = ["SignedRequest", "sign_request"]

_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A body and the headers WHK would send with it (``content-type`` and the three webhook-* ones)."""

    body: bytes
    headers: Mapping[str, str]
    msg_id: str
    timestamp: int


def sign_request(
    payload: Any,
    secret: str | Sequence[str],
    *,
    msg_id: str | None = None,
    timestamp: int | None = None,
) -> SignedRequest:
    """Sign ``payload`` (bytes as they are; anything else JSON-encoded) with ``secret`` (several during a
    rotation: one signature each, as WHK sends them). ``timestamp`` defaults to now; pass an old one to
    test that a receiver refuses stale deliveries. ``msg_id`` defaults to a fresh ``msg_…`` id."""
    body = payload if isinstance(payload, bytes) else _ENCODER.encode(payload)
    keys = [decode_secret(s) for s in ([secret] if isinstance(secret, str) else secret)]
    mid = msg_id or f"msg_{_secrets.token_hex(12)}"
    ts = int(time.time()) if timestamp is None else timestamp
    headers = {"content-type": "application/json", **dict(signature_headers(keys, mid, ts, body))}
    return SignedRequest(body=body, headers=headers, msg_id=mid, timestamp=ts)
