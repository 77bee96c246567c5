"""AES-256-GCM box for secrets stored in PostgreSQL (webhook signing secrets, outbound credentials).

Shared by the API (encrypts on create/rotate) and the dispatcher (decrypts to sign), so it lives in the
core and imports nothing from ``api`` or ``dispatcher``.

Ciphertext layout (bytes)::

    0x01 | len(kid) | kid (ASCII) | nonce (12) | AES-GCM ciphertext + tag (16)

* the key id travels inside the ciphertext, so old rows keep decrypting after a new primary key is added
  (``WHK_SECRET_KEYS=new:…,old:…``) until ``whk secrets rotate`` re-encrypts them;
* the associated data is the row identity (``row_aad("webhook_secrets", 42)``): a ciphertext copied to
  another row, or another table, fails authentication and raises ``SecretDecryptError`` naming the row
  and key id, never a crash deeper down.

Keys come from ``WHK_SECRET_KEYS`` (``kid:base64(32 bytes)``, comma-separated, first = primary). With no
keys, WHK_ENV=development gets a fixed, publicly known development key (with a warning in the log);
production refuses to start (``SecretKeyMissing``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import sql

from whk.errors import SettingsError, WhkError
from whk.settings import Settings

__all__ = [
    "DEV_KEY_ID",
    "ENCRYPTED_COLUMNS",
    "SecretBox",
    "SecretBoxError",
    "SecretDecryptError",
    "SecretKeyMissing",
    "row_aad",
]

log = logging.getLogger("whk.secretbox")

VERSION = 1
NONCE_BYTES = 12
KEY_BYTES = 32
DEV_KEY_ID = "dev"
_KID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")

# Every encrypted column: (table in schema whk, id column, ciphertext column). ``whk secrets rotate``
# re-encrypts exactly these; a new encrypted column must be added here.
ENCRYPTED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("webhook_secrets", "id", "secret_enc"),
    ("whk_01_webhooks", "id", "auth_credential_enc"),
    ("alert_channels", "id", "target_enc"),
    ("alert_channels", "id", "secret_enc"),
)


class SecretKeyMissing(SettingsError):
    """WHK_ENV=production and WHK_SECRET_KEYS is unset."""


class SecretBoxError(WhkError):
    """Base of the box's runtime errors."""


class SecretDecryptError(SecretBoxError):
    """A stored ciphertext does not decrypt: wrong row (copied), unknown key id, or corrupted bytes."""

    def __init__(self, message: str, *, row: str, key_id: str | None) -> None:
        super().__init__(
            message,
            hint="rotate the secret through the API; if the key id is unknown, add it to WHK_SECRET_KEYS",
        )
        self.row = row
        self.key_id = key_id


def _associated(row_id: str | None, aad: str | None) -> str:
    if (row_id is None) == (aad is None):
        raise TypeError("pass exactly one of row_id= or aad=")
    return row_id if row_id is not None else str(aad)


def row_aad(table: str, row_id: int | str) -> str:
    """The associated data of one stored secret: ``"<table>:<id>"``."""
    return f"{table}:{row_id}"


def _dev_key() -> bytes:
    # Deliberately derived from a public string: it protects nothing and is refused in production.
    return hashlib.sha256(b"whk development secret key - never use in production").digest()


def parse_keys(raw: str) -> dict[str, bytes]:
    """``kid:base64key,…`` → ordered ``{kid: key}`` (first = primary); raise SettingsError when malformed."""
    keys: dict[str, bytes] = {}
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        kid, _, material = entry.partition(":")
        if not _KID.match(kid):
            raise SettingsError(f"WHK_SECRET_KEYS: bad key id {kid!r}", hint="use 1-32 of [A-Za-z0-9_-]")
        try:
            key = base64.b64decode(material, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SettingsError(f"WHK_SECRET_KEYS: key {kid!r} is not valid base64", hint=_KEY_HINT) from exc
        if len(key) != KEY_BYTES:
            raise SettingsError(
                f"WHK_SECRET_KEYS: key {kid!r} has {len(key)} bytes, expected {KEY_BYTES}", hint=_KEY_HINT
            )
        if kid in keys:
            raise SettingsError(f"WHK_SECRET_KEYS: key id {kid!r} appears twice")
        keys[kid] = key
    return keys


_KEY_HINT = 'generate one with: python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())"'


def generate_key_entry(kid: str) -> str:
    """A new ``kid:base64key`` entry for WHK_SECRET_KEYS."""
    if not _KID.match(kid):
        raise SettingsError(f"bad key id {kid!r}", hint="use 1-32 of [A-Za-z0-9_-]")
    return f"{kid}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"


@dataclass(frozen=True, slots=True)
class SecretBox:
    """Encrypts with the primary key, decrypts with whichever key id the ciphertext names."""

    keys: Mapping[str, bytes]
    primary: str

    def __post_init__(self) -> None:
        if self.primary not in self.keys:
            raise SettingsError(f"primary secret key {self.primary!r} is not among the keys")

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The box configured by WHK_SECRET_KEYS; the development key only when WHK_ENV=development."""
        keys = parse_keys(settings.core.secret_keys)
        if keys:
            return cls(keys=keys, primary=next(iter(keys)))
        if settings.core.environment != "development":
            raise SecretKeyMissing(
                "WHK_SECRET_KEYS is not set and WHK_ENV=production",
                hint="set WHK_SECRET_KEYS=kid:base64(32 random bytes); see docs/api.md (key rotation)",
            )
        log.warning(
            "WHK_SECRET_KEYS is unset: using the public development key %r (never in production)", DEV_KEY_ID
        )
        return cls(keys={DEV_KEY_ID: _dev_key()}, primary=DEV_KEY_ID)

    @classmethod
    def from_spec(cls, spec: str) -> SecretBox:
        """The box of a ``kid:base64key,…`` string (first = primary); no development fallback."""
        keys = parse_keys(spec)
        if not keys:
            raise SettingsError("WHK_SECRET_KEYS is empty", hint=_KEY_HINT)
        return cls(keys=keys, primary=next(iter(keys)))

    @property
    def active_key_id(self) -> str:
        return self.primary

    def encrypt(self, plaintext: bytes, *, row_id: str | None = None, aad: str | None = None) -> bytes:
        """Seal ``plaintext`` for the row ``row_id`` (``row_aad(table, id)``; ``aad`` is an alias)."""
        ad = _associated(row_id, aad)
        kid = self.primary.encode("ascii")
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.keys[self.primary]).encrypt(nonce, plaintext, ad.encode("utf-8"))
        return bytes([VERSION, len(kid)]) + kid + nonce + sealed

    @staticmethod
    def key_id_of(blob: bytes) -> str | None:
        """The key id a ciphertext names (None when the bytes are not a WHK ciphertext)."""
        if len(blob) < 2 or blob[0] != VERSION or len(blob) < 2 + blob[1]:
            return None
        try:
            return blob[2 : 2 + blob[1]].decode("ascii")
        except UnicodeDecodeError:
            return None

    def decrypt(self, blob: bytes, *, row_id: str | None = None, aad: str | None = None) -> bytes:
        """Plaintext of ``blob`` stored in ``row_id``; SecretDecryptError on any mismatch.

        Transitional: a caller passing a bare numeric ``aad=`` (the dispatcher's first convention) also
        opens ciphertexts sealed for ``row_aad(<encrypted table>, <that id>)``, so rows written by the
        API keep working until every caller passes ``row_id=row_aad(table, id)``.
        """
        if row_id is None and aad is not None and aad.isdigit():
            last: SecretDecryptError | None = None
            for candidate in (aad, *(row_aad(table, aad) for table, _, _ in ENCRYPTED_COLUMNS)):
                try:
                    return self.decrypt(blob, row_id=candidate)
                except SecretDecryptError as exc:
                    last = exc
            assert last is not None
            raise last
        row_id = _associated(row_id, aad)
        blob = bytes(blob)
        kid = self.key_id_of(blob)
        if kid is None or len(blob) < 2 + blob[1] + NONCE_BYTES + 16:
            raise SecretDecryptError(f"{row_id}: not a WHK ciphertext", row=row_id, key_id=None)
        key = self.keys.get(kid)
        if key is None:
            raise SecretDecryptError(
                f"{row_id}: encrypted with key {kid!r}, which is not in WHK_SECRET_KEYS",
                row=row_id,
                key_id=kid,
            )
        start = 2 + blob[1]
        nonce, sealed = blob[start : start + NONCE_BYTES], blob[start + NONCE_BYTES :]
        try:
            return AESGCM(key).decrypt(nonce, sealed, row_id.encode("utf-8"))
        except InvalidTag:
            raise SecretDecryptError(
                f"{row_id}: ciphertext does not belong to this row or was altered (key {kid!r})",
                row=row_id,
                key_id=kid,
            ) from None

    def needs_rotation(self, blob: bytes) -> bool:
        return self.key_id_of(bytes(blob)) != self.primary


@dataclass(frozen=True, slots=True)
class RotationReport:
    """What ``rotate_secrets`` did: rows re-encrypted, rows already current, rows that failed."""

    rotated: int
    current: int
    failed: tuple[SecretDecryptError, ...]


def rotate_secrets(conn: psycopg.Connection[Any], box: SecretBox, *, batch: int = 500) -> RotationReport:
    """Re-encrypt every stored secret under the primary key, one transaction per batch of rows.

    Rows that fail to decrypt (copied across rows, unknown key, corrupted) are reported and left as they
    are; everything else is rotated. Safe to re-run: rows already under the primary key are skipped.
    """
    rotated = current = 0
    failed: list[SecretDecryptError] = []
    for table, id_col, col in ENCRYPTED_COLUMNS:
        ident = sql.Identifier("whk", table)
        select = sql.SQL(
            "SELECT {id}, {col} FROM {t} WHERE {col} IS NOT NULL AND {id} > %s "
            "ORDER BY {id} LIMIT %s FOR UPDATE"
        ).format(id=sql.Identifier(id_col), col=sql.Identifier(col), t=ident)
        update = sql.SQL("UPDATE {t} SET {col} = %s WHERE {id} = %s").format(
            id=sql.Identifier(id_col), col=sql.Identifier(col), t=ident
        )
        last: int = 0
        while True:
            with conn.transaction():
                rows = conn.execute(select, (last, batch)).fetchall()
                for row_id, blob in rows:
                    last = row_id
                    if not box.needs_rotation(blob):
                        current += 1
                        continue
                    aad = row_aad(table, row_id)
                    try:
                        plain = box.decrypt(blob, row_id=aad)
                    except SecretDecryptError as exc:
                        failed.append(exc)
                        continue
                    conn.execute(update, (box.encrypt(plain, row_id=aad), row_id))
                    rotated += 1
            if len(rows) < batch:
                break
    return RotationReport(rotated=rotated, current=current, failed=tuple(failed))


def rotate_command(settings: Settings, *, echo: Callable[[str], None] = print) -> int:
    """``whk secrets rotate``: re-encrypt every stored secret under the first key of WHK_SECRET_KEYS.

    Exit status 0 when every row is under the primary key afterwards, 1 when some rows failed to decrypt
    (each is printed with its row and key id).
    """
    from whk.db import connect

    box = SecretBox.from_settings(settings)
    with connect(settings, autocommit=True) as conn:
        report = rotate_secrets(conn, box)
    echo(
        f"secrets rotate: {report.rotated} re-encrypted under key {box.primary!r}, "
        f"{report.current} already current, {len(report.failed)} failed"
    )
    for exc in report.failed:
        echo(f"  failed: {exc.message}")
    return 1 if report.failed else 0
