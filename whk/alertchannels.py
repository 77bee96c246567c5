"""Alert notification channels at rest (``whk.alert_channels``): the target (Slack URL, PagerDuty routing
key, webhook URL, e-mail address) and the secret (webhook signing secret, SMTP password) are sealed with
``whk.secretbox`` and bound to their row, like webhook signing secrets; ``display`` is a masked form the
API may show. Shared by the API (creates them), ``whk up`` (the demo channel) and the worker (opens them).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.types.json import Jsonb

from whk.secretbox import SecretBox, row_aad

__all__ = ["CHANNEL_TYPES", "acreate_channel", "create_channel", "mask", "open_channel"]

CHANNEL_TYPES = ("webhook", "slack", "pagerduty", "email")

_INSERT = (
    "INSERT INTO whk.alert_channels (consumer_id, type, target_enc, config, display) "
    "VALUES (%s, %s, '\\x00', %s, %s) RETURNING id"
)
_SEAL = "UPDATE whk.alert_channels SET target_enc = %s, secret_enc = %s WHERE id = %s"


def mask(kind: str, target: str) -> str:
    """What the API shows: the host of a URL (its path may be a credential), the e-mail address, or the
    last four characters of a routing key."""
    if kind in ("webhook", "slack"):
        parts = urlsplit(target)
        shown = (
            f"{parts.scheme}://{parts.netloc}/…"
            if kind == "slack"
            else f"{parts.scheme}://{parts.netloc}{parts.path}"
        )
        return shown[:300]
    if kind == "pagerduty":
        return f"routing key …{target[-4:]}"
    return target[:300]


def _sealed(box: SecretBox, channel_id: int, target: str, secret: str | None) -> tuple[bytes, bytes | None]:
    aad = row_aad("alert_channels", channel_id)
    enc_secret = None if secret is None else box.encrypt(secret.encode(), row_id=aad)
    return box.encrypt(target.encode(), row_id=aad), enc_secret


def create_channel(
    conn: psycopg.Connection[Any],
    box: SecretBox,
    *,
    consumer_id: int | None,
    kind: str,
    target: str,
    secret: str | None = None,
    config: dict[str, Any] | None = None,
) -> int:
    with conn.transaction():
        row = conn.execute(_INSERT, (consumer_id, kind, Jsonb(config or {}), mask(kind, target))).fetchone()
        assert row is not None
        channel_id = int(row[0])
        conn.execute(_SEAL, (*_sealed(box, channel_id, target, secret), channel_id))
    return channel_id


async def acreate_channel(
    conn: psycopg.AsyncConnection[Any],
    box: SecretBox,
    *,
    consumer_id: int | None,
    kind: str,
    target: str,
    secret: str | None = None,
    config: dict[str, Any] | None = None,
) -> int:
    """``create_channel`` on an async connection (the caller's transaction, if any, holds both writes)."""
    cur = await conn.execute(_INSERT, (consumer_id, kind, Jsonb(config or {}), mask(kind, target)))
    row = await cur.fetchone()
    assert row is not None
    channel_id = int(row[0])
    await conn.execute(_SEAL, (*_sealed(box, channel_id, target, secret), channel_id))
    return channel_id


def open_channel(
    box: SecretBox, channel_id: int, target_enc: bytes, secret_enc: bytes | None
) -> tuple[str, str | None]:
    """The plaintext target and secret of a channel row (SecretDecryptError when they do not belong)."""
    aad = row_aad("alert_channels", channel_id)
    target = box.decrypt(bytes(target_enc), row_id=aad).decode()
    secret = None if secret_enc is None else box.decrypt(bytes(secret_enc), row_id=aad).decode()
    return target, secret
