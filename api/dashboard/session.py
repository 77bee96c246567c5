"""The dashboard's sign-in: a signed, expiring session cookie and the CSRF token derived from it.

The operator pastes an API key once; the key is checked like the API checks it, and the browser gets

    whk_session = base64url(JSON {"k": key id, "p": key prefix, "e": expiry (epoch s), "n": nonce})
                  "." base64url(HMAC-SHA256(signing key, first part))

as an ``HttpOnly; SameSite=Strict; Path=/dashboard`` cookie (``Secure`` over HTTPS and in production).
The key itself never leaves the login request: the cookie names the key (id and prefix), and every page
re-reads that key row, so a revoked or expired key, or a suspended tenant, ends the session at once.

The signing key is derived from the primary WHK_SECRET_KEYS key (HMAC with a fixed label), so every API
process of one installation accepts the same cookies and rotating the primary key signs everyone out.

CSRF: every POST form carries ``csrf`` = HMAC(signing key, "csrf:" + nonce): tied to this session, never
stored, compared in constant time. SameSite=Strict already keeps cross-site POSTs from carrying the
cookie; the token is the second, independent defence.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import msgspec

from whk.secretbox import SecretBox

__all__ = ["COOKIE", "Session", "SessionSigner"]

COOKIE = "whk_session"
_LABEL = b"whk dashboard session v1"


class Session(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the cookie carries: the API key row (id, prefix), the expiry and a per-session nonce."""

    k: int
    p: str
    e: int
    n: str

    @property
    def key_id(self) -> int:
        return self.k

    @property
    def expires_at(self) -> int:
        return self.e


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class SessionSigner:
    """Signs and verifies session cookies; makes and checks CSRF tokens. ``ttl_s``: session lifetime."""

    key: bytes
    ttl_s: int

    @classmethod
    def from_secretbox(cls, box: SecretBox, ttl_s: int) -> SessionSigner:
        key = hmac.new(box.keys[box.primary], _LABEL, hashlib.sha256).digest()
        return cls(key=key, ttl_s=ttl_s)

    def issue(self, key_id: int, prefix: str, *, now: float | None = None) -> tuple[str, Session]:
        """A new cookie value for the API key ``key_id``/``prefix``, valid for ``ttl_s`` from ``now``."""
        issued = time.time() if now is None else now
        session = Session(k=key_id, p=prefix, e=int(issued) + self.ttl_s, n=secrets.token_urlsafe(16))
        body = _b64(msgspec.json.encode(session))
        return f"{body}.{self._mac(body.encode('ascii'))}", session

    def verify(self, value: str | None, *, now: float | None = None) -> Session | None:
        """The session of a cookie value, or None when it is missing, forged, malformed or expired."""
        if not value or value.count(".") != 1:
            return None
        body, mac = value.split(".")
        try:
            expected = self._mac(body.encode("ascii"))
        except UnicodeEncodeError:
            return None
        if not hmac.compare_digest(expected.encode("ascii"), mac.encode("ascii", "replace")):
            return None
        try:
            session = msgspec.json.decode(_unb64(body), type=Session)
        except (ValueError, msgspec.DecodeError):
            return None
        current = time.time() if now is None else now
        return session if session.e > current else None

    def csrf_token(self, session: Session) -> str:
        return self._mac(b"csrf:" + session.n.encode("ascii"))

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        if not token:
            return False
        return hmac.compare_digest(self.csrf_token(session).encode("ascii"), token.encode("ascii", "replace"))

    def _mac(self, data: bytes) -> str:
        return _b64(hmac.new(self.key, data, hashlib.sha256).digest())
