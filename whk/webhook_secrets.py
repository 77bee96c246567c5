"""Webhook signing secrets, made one way whoever asks: the API (create, rotate), the job worker (a webhook
created in SQL, or left without a current secret) and ``whk webhooks provision-secrets``.

A secret is ``whsec_`` + 32 random bytes (``whk.signing.generate_secret``), stored in
``whk.webhook_secrets`` only as a ``SecretBox`` ciphertext whose associated data is the row's identity
(``row_aad("webhook_secrets", id)``), so the row id is reserved before the INSERT.

Never unsigned: while a webhook has no current secret (no row with ``expires_at`` NULL) the database keeps
``whk_01_webhooks.needs_secret_since`` set (triggers in ``sql/triggers/webhook_needs_secret.sql``), the
dispatcher claims nothing for it and, at commit, the ``provision_secret`` job is queued. The database cannot
make the secret itself: the encryption key (WHK_SECRET_KEYS) never leaves the application.
"""

from __future__ import annotations

import secrets as pysecrets
from dataclasses import dataclass
from typing import Any, Final

import psycopg

from whk.secretbox import SecretBox, row_aad
from whk.signing import generate_secret

__all__ = [
    "PROVISION_ENTRYPOINT",
    "NewSecret",
    "aadd_secret",
    "aprovision_pending",
    "aprovision_secret",
    "current_secret",
    "new_key_id",
    "provision_pending",
    "provision_secret",
    "seal_new_secret",
]

# The pgqueuer entrypoint the database queues (whk.enqueue_secret_provisioning); payload = webhook id.
PROVISION_ENTRYPOINT: Final = "provision_secret"

_RESERVE = "SELECT nextval(pg_get_serial_sequence('whk.webhook_secrets', 'id'))"
_INSERT = (
    "INSERT INTO whk.webhook_secrets (id, webhook_id, key_id, secret_enc, expires_at) "
    "OVERRIDING SYSTEM VALUE VALUES (%(id)s, %(webhook_id)s, %(key_id)s, %(enc)s, NULL)"
)
# The webhook still waits for a secret (locked: two provisioners never both add one).
_LOCK_WAITING = (
    "SELECT w.id FROM whk.whk_01_webhooks w "
    "WHERE w.id = %(id)s AND w.needs_secret_since IS NOT NULL AND w.deleted_at IS NULL FOR UPDATE"
)
_WAITING = (
    "SELECT w.id FROM whk.whk_01_webhooks w "
    "WHERE w.needs_secret_since IS NOT NULL AND w.deleted_at IS NULL ORDER BY w.id LIMIT %(limit)s"
)
_CURRENT = (
    "SELECT s.id, s.secret_enc FROM whk.webhook_secrets s "
    "WHERE s.webhook_id = %(id)s AND s.expires_at IS NULL ORDER BY s.created_at DESC, s.id DESC LIMIT 1"
)


@dataclass(frozen=True, slots=True)
class NewSecret:
    """A freshly made signing secret: the plaintext (shown once, never stored) and its sealed row."""

    row_id: int
    key_id: str
    secret: str
    enc: bytes

    def params(self, webhook_id: int) -> dict[str, Any]:
        return {"id": self.row_id, "webhook_id": webhook_id, "key_id": self.key_id, "enc": self.enc}


def new_key_id() -> str:
    """The public id of a signing key (``key_…``, shown in listings and audit rows)."""
    return "key_" + pysecrets.token_hex(12)


def seal_new_secret(box: SecretBox, row_id: int) -> NewSecret:
    """Make a secret for the ``whk.webhook_secrets`` row ``row_id`` (reserved beforehand) and seal it."""
    secret = generate_secret()
    enc = box.encrypt(secret.encode(), row_id=row_aad("webhook_secrets", row_id))
    return NewSecret(row_id=row_id, key_id=new_key_id(), secret=secret, enc=enc)


# ----------------------------------------------------------------------------------------------- async
async def aadd_secret(conn: psycopg.AsyncConnection[Any], box: SecretBox, webhook_id: int) -> NewSecret:
    """Add a new current signing secret to the webhook, in the caller's transaction."""
    row = await (await conn.execute(_RESERVE)).fetchone()
    assert row is not None
    made = seal_new_secret(box, int(row[0]))
    await conn.execute(_INSERT, made.params(webhook_id))
    return made


async def aprovision_secret(
    conn: psycopg.AsyncConnection[Any], box: SecretBox, webhook_id: int
) -> NewSecret | None:
    """Give the webhook a secret if it still waits for one (its own transaction); None when it does not."""
    async with conn.transaction():
        if await (await conn.execute(_LOCK_WAITING, {"id": webhook_id})).fetchone() is None:
            return None
        return await aadd_secret(conn, box, webhook_id)


async def aprovision_pending(
    conn: psycopg.AsyncConnection[Any], box: SecretBox, *, limit: int = 1000
) -> list[tuple[int, NewSecret]]:
    """Provision every webhook that waits for a secret (at most ``limit``), one transaction each."""
    ids = [int(r[0]) for r in await (await conn.execute(_WAITING, {"limit": limit})).fetchall()]
    done: list[tuple[int, NewSecret]] = []
    for webhook_id in ids:
        made = await aprovision_secret(conn, box, webhook_id)
        if made is not None:
            done.append((webhook_id, made))
    return done


# ------------------------------------------------------------------------------------------------ sync
def provision_secret(conn: psycopg.Connection[Any], box: SecretBox, webhook_id: int) -> NewSecret | None:
    """``aprovision_secret`` for synchronous callers (the CLI)."""
    with conn.transaction():
        if conn.execute(_LOCK_WAITING, {"id": webhook_id}).fetchone() is None:
            return None
        row = conn.execute(_RESERVE).fetchone()
        assert row is not None
        made = seal_new_secret(box, int(row[0]))
        conn.execute(_INSERT, made.params(webhook_id))
        return made


def provision_pending(
    conn: psycopg.Connection[Any], box: SecretBox, *, limit: int = 1000
) -> list[tuple[int, NewSecret]]:
    """``aprovision_pending`` for synchronous callers (the CLI)."""
    ids = [int(r[0]) for r in conn.execute(_WAITING, {"limit": limit}).fetchall()]
    done: list[tuple[int, NewSecret]] = []
    for webhook_id in ids:
        made = provision_secret(conn, box, webhook_id)
        if made is not None:
            done.append((webhook_id, made))
    return done


def current_secret(conn: psycopg.Connection[Any], box: SecretBox, webhook_id: int) -> str | None:
    """The webhook's current signing secret in clear (an operator with the database and the key reads it,
    e.g. to hand it to the receiver of a webhook created in SQL); None when it has none."""
    row = conn.execute(_CURRENT, {"id": webhook_id}).fetchone()
    if row is None:
        return None
    return box.decrypt(bytes(row[1]), row_id=row_aad("webhook_secrets", int(row[0]))).decode("utf-8")
