"""Message-queue addresses: what a ``redis://`` or ``amqp://`` webhook URL (or ``whk source`` URL) means.

A webhook's target is HTTP(S) or a queue (docs/queues.md). Shared by the API (validation when a webhook is
registered), the dispatcher's queue transports and the ``whk source`` consumers. Pure: no I/O.

Redis: ``redis[s]://host[:port]/<stream>[?db=N&maxlen=N]``. The path (percent-decoded) is the stream key;
``maxlen`` caps the stream approximately (``XADD … MAXLEN ~ N``, default ``DEFAULT_MAXLEN``); ``db`` picks
the logical database (default 0). A broker login never rides in a stored URL (the SSRF policy refuses
userinfo): it is the webhook's ``basic`` credential ``user:password``, encrypted at rest, which reaches the
transport as the request's ``Authorization: Basic`` header (``broker_login``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

from whk.errors import WhkError

__all__ = [
    "DEFAULT_MAXLEN",
    "MAXLEN_RANGE",
    "BrokerLogin",
    "QueueUrlError",
    "RedisTarget",
    "broker_login",
    "parse_redis_url",
]

DEFAULT_MAXLEN: Final = 1_000_000
MAXLEN_RANGE: Final = (1, 1_000_000_000)
DB_RANGE: Final = (0, 255)
MAX_STREAM_LENGTH: Final = 256
REDIS_DEFAULT_PORT: Final = 6379


class QueueUrlError(WhkError):
    """A queue URL that cannot be used; ``field`` names the part (stream, maxlen, db, port, …)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class BrokerLogin:
    """The login a queue transport authenticates with (user None: password-only AUTH)."""

    user: str | None
    password: str

    def __repr__(self) -> str:  # never print the password
        return f"BrokerLogin(user={self.user!r}, password='***')"


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed ``redis[s]://`` URL."""

    host: str
    port: int
    db: int
    stream: str
    maxlen: int
    tls: bool
    login: BrokerLogin | None = None  # only a `whk source` URL may carry one (it is never stored)


def _bounded(name: str, text: str, bounds: tuple[int, int]) -> int:
    low, high = bounds
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise QueueUrlError(f"{name} must be an integer in [{low}, {high}], not {text[:40]!r}", field=name)
    return int(text)


def parse_redis_url(url: str, *, allow_login: bool = False) -> RedisTarget:
    """The Redis stream ``url`` names; raises ``QueueUrlError`` (with the offending part) otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port or REDIS_DEFAULT_PORT
    except ValueError as exc:
        raise QueueUrlError(f"not a URL: {exc}", field="url") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss"):
        raise QueueUrlError(f"not a Redis URL (scheme {scheme!r})", field="scheme")
    if not parts.hostname:
        raise QueueUrlError("the URL has no host", field="host")
    login: BrokerLogin | None = None
    if parts.username is not None or parts.password is not None:
        if not allow_login:
            raise QueueUrlError(
                "a stored queue URL carries no login: make it the webhook's basic credential user:password",
                field="userinfo",
            )
        login = BrokerLogin(
            unquote(parts.username) if parts.username else None, unquote(parts.password or "")
        )
    stream = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if not stream or len(stream) > MAX_STREAM_LENGTH or any(c in stream for c in "\r\n\0"):
        raise QueueUrlError(
            f"the URL's path must name the stream (1-{MAX_STREAM_LENGTH} characters): redis://host/orders",
            field="stream",
        )
    maxlen, db = DEFAULT_MAXLEN, 0
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "maxlen":
            maxlen = _bounded("maxlen", value, MAXLEN_RANGE)
        elif key == "db":
            db = _bounded("db", value, DB_RANGE)
        else:
            raise QueueUrlError(f"unknown query parameter {key[:40]!r} (maxlen, db)", field=key[:40])
    return RedisTarget(parts.hostname, port, db, stream, maxlen, scheme == "rediss", login)


def broker_login(headers: Sequence[tuple[str, str]]) -> BrokerLogin | None:
    """The login carried by a request's ``Authorization: Basic`` header (the webhook's decrypted basic
    credential ``user:password``; an empty user means password-only), or None."""
    for name, value in headers:
        if name.lower() != "authorization" or not value.startswith("Basic "):
            continue
        try:
            text = base64.b64decode(value[6:], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = text.partition(":")
        if not sep:
            return BrokerLogin(None, text)
        return BrokerLogin(user or None, password)
    return None
