"""AES-256-GCM box for secrets stored in the database (webhook signing secrets, outbound credentials).

Shared by the API (which encrypts what users send) and the dispatcher (which decrypts to sign and
authenticate), so neither imports the other. The blob names the key that sealed it, so keys rotate
without re-encrypting: add a new key first in ``WHK_SECRET_KEYS`` (it encrypts from then on) and keep
the old ones listed until every row has been rewritten.

Blob layout (version 1)::

    b"WHK1" | u8 len(key_id) | key_id (ASCII) | 12-byte nonce | ciphertext + 16-byte tag

The associated data is the owning row's id (``aad``), so a ciphertext copied onto another row fails to
open instead of silently signing with another webhook's secret.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from whk.errors import WhkError

_MAGIC = b"WHK1"
_NONCE = 12
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class SecretBoxError(WhkError):
    """A key specification is invalid, or a blob cannot be opened (unknown key, tampering, wrong row)."""


class SecretBox:
    """Encrypt with the active key; decrypt with whichever listed key sealed the blob."""

    __slots__ = ("_active", "_keys")

    def __init__(self, keys: Mapping[str, bytes], active_key_id: str) -> None:
        if active_key_id not in keys:
            raise SecretBoxError(f"active key {active_key_id!r} is not among the keys")
        for key_id, key in keys.items():
            if not _KEY_ID.match(key_id):
                raise SecretBoxError(f"key id {key_id!r} must be 1-64 of [A-Za-z0-9_.-]")
            if len(key) != 32:
                raise SecretBoxError(f"key {key_id!r} must be 32 bytes (AES-256), got {len(key)}")
        self._keys = {k: AESGCM(v) for k, v in keys.items()}
        self._active = active_key_id

    @classmethod
    def from_spec(cls, spec: str) -> SecretBox:
        """Parse ``key_id:base64key[,key_id:base64key...]``; the first key encrypts."""
        keys: dict[str, bytes] = {}
        first: str | None = None
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            key_id, sep, b64 = part.partition(":")
            if not sep:
                raise SecretBoxError(
                    "WHK_SECRET_KEYS entries look like key_id:base64key",
                    hint="a key is base64 of 32 random bytes, e.g. `openssl rand -base64 32`",
                )
            try:
                keys[key_id.strip()] = base64.b64decode(b64.strip(), validate=True)
            except binascii.Error as exc:
                raise SecretBoxError(f"key {key_id!r} is not valid base64") from exc
            first = first or key_id.strip()
        if first is None:
            raise SecretBoxError("WHK_SECRET_KEYS is empty")
        return cls(keys, first)

    @property
    def active_key_id(self) -> str:
        return self._active

    def encrypt(self, plaintext: bytes, *, aad: str) -> bytes:
        nonce = os.urandom(_NONCE)
        kid = self._active.encode("ascii")
        sealed = self._keys[self._active].encrypt(nonce, plaintext, aad.encode("utf-8"))
        return _MAGIC + bytes([len(kid)]) + kid + nonce + sealed

    def decrypt(self, blob: bytes, *, aad: str) -> bytes:
        if len(blob) < len(_MAGIC) + 2 + _NONCE + 16 or not blob.startswith(_MAGIC):
            raise SecretBoxError("not a WHK secret box blob")
        n = blob[len(_MAGIC)]
        start = len(_MAGIC) + 1
        key_id = blob[start : start + n].decode("ascii", errors="replace")
        aead = self._keys.get(key_id)
        if aead is None:
            raise SecretBoxError(
                f"secret was sealed with key {key_id!r}, which is not configured",
                hint="keep retired keys in WHK_SECRET_KEYS until every secret was re-encrypted",
            )
        nonce = blob[start + n : start + n + _NONCE]
        try:
            return aead.decrypt(nonce, blob[start + n + _NONCE :], aad.encode("utf-8"))
        except InvalidTag as exc:
            raise SecretBoxError("secret cannot be opened (wrong row, wrong key or tampered)") from exc
