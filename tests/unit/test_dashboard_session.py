"""The dashboard's session cookie: signed, expiring, bound to the key row; CSRF tokens bound to it."""

from __future__ import annotations

from api.dashboard.session import SessionSigner
from whk.secretbox import SecretBox

BOX = SecretBox.from_spec("k1:" + "A" * 43 + "=")


def signer(ttl: int = 600) -> SessionSigner:
    return SessionSigner.from_secretbox(BOX, ttl)


def test_a_fresh_cookie_verifies_until_it_expires() -> None:
    value, session = signer().issue(7, "abcdefghijkl", now=1000.0)
    assert signer().verify(value, now=1599.0) == session
    assert session.key_id == 7 and session.expires_at == 1600
    assert signer().verify(value, now=1600.0) is None


def test_tampered_or_foreign_cookies_are_refused() -> None:
    value, _ = signer().issue(7, "abcdefghijkl", now=1000.0)
    body, mac = value.split(".")
    assert signer().verify(body + "." + mac[:-2] + "AA", now=1000.0) is None
    assert signer().verify(body[:-2] + "x." + mac, now=1000.0) is None
    other = SessionSigner.from_secretbox(SecretBox.from_spec("k2:" + "B" * 43 + "="), 600)
    assert other.verify(value, now=1000.0) is None
    for junk in (None, "", "no-dot", "a.b.c", "é.é"):
        assert signer().verify(junk, now=1000.0) is None


def test_the_csrf_token_belongs_to_one_session() -> None:
    _, one = signer().issue(7, "abcdefghijkl")
    _, two = signer().issue(7, "abcdefghijkl")
    token = signer().csrf_token(one)
    assert signer().csrf_ok(one, token)
    assert not signer().csrf_ok(two, token)
    assert not signer().csrf_ok(one, None)
    assert not signer().csrf_ok(one, "")
    assert not signer().csrf_ok(one, token[:-1] + ("A" if token[-1] != "A" else "B"))
