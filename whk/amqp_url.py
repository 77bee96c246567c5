"""RabbitMQ addresses: what an ``amqp://`` webhook URL or ``whk source amqp://`` URL means (docs/queues.md).

Target (a webhook's URL): ``amqp[s]://host[:port]/<vhost>?exchange=<name>``. Each event is published to
the exchange with its event type as the routing key (``order.created``: a topic exchange routes it to the
queues bound with ``order.*`` or ``#``). The path is the percent-encoded virtual host; no path, or ``/``
alone, is the default virtual host ``/`` (also written ``%2F``). Ports default to 5672 (``amqp``) and 5671
(``amqps``). A stored URL never carries a login (the SSRF policy refuses userinfo): the broker login is the
webhook's ``basic`` credential ``user:password``, encrypted at rest like every credential.

Source (``whk source``): ``amqp[s]://[user:password@]host[:port]/<vhost>?queue=<name>[&prefetch=N]
[&dead_letter_queue=<name>]``. The queue is consumed with manual acks and at most ``prefetch`` (default
``DEFAULT_PREFETCH``) unacknowledged messages; a message that breaks its contract is published to the
dead-letter queue (default ``<queue>.dead``, declared durable by the source) and then acknowledged. A
source URL is typed on a command line, not stored, so it may carry the login.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

from whk.queue_targets import BrokerLogin, QueueUrlError

__all__ = [
    "DEFAULT_PREFETCH",
    "PREFETCH_RANGE",
    "AmqpAddress",
    "AmqpSourceUrl",
    "AmqpTarget",
    "parse_amqp_source",
    "parse_amqp_target",
]

AMQP_PORT: Final = 5672
AMQPS_PORT: Final = 5671
# AMQP 0-9-1 short strings: exchange, queue and virtual host names are at most 255 bytes.
MAX_NAME_BYTES: Final = 255
DEFAULT_PREFETCH: Final = 100
PREFETCH_RANGE: Final = (1, 10_000)


@dataclass(frozen=True, slots=True)
class AmqpAddress:
    """Where a broker is: host, port, virtual host, TLS."""

    host: str
    port: int
    vhost: str
    tls: bool


@dataclass(frozen=True, slots=True)
class AmqpTarget:
    """A parsed webhook target URL: publish to ``exchange`` on ``address``."""

    address: AmqpAddress
    exchange: str


@dataclass(frozen=True, slots=True)
class AmqpSourceUrl:
    """A parsed ``whk source`` URL: consume ``queue`` on ``address``."""

    address: AmqpAddress
    queue: str
    dead_letter_queue: str
    prefetch: int
    login: BrokerLogin | None


def _name(field: str, value: str, *, allow_empty: bool = False) -> str:
    if (not value and not allow_empty) or len(value.encode("utf-8")) > MAX_NAME_BYTES:
        raise QueueUrlError(f"{field} must have 1 to {MAX_NAME_BYTES} bytes", field=field)
    if any(c in value for c in "\r\n\0"):
        raise QueueUrlError(f"{field} must not contain CR, LF or NUL", field=field)
    return value


def _address(url: str, *, allow_login: bool) -> tuple[AmqpAddress, BrokerLogin | None, list[tuple[str, str]]]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise QueueUrlError(f"not a URL: {exc}", field="url") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("amqp", "amqps"):
        raise QueueUrlError(f"not an AMQP URL (scheme {scheme!r})", field="scheme")
    if not parts.hostname:
        raise QueueUrlError("the URL has no host", field="host")
    if port == 0:
        raise QueueUrlError("port 0 is not a port", field="port")
    login: BrokerLogin | None = None
    if parts.username is not None or parts.password is not None:
        if not allow_login:
            raise QueueUrlError(
                "a stored queue URL carries no login: give it as the webhook's basic credential "
                "user:password",
                field="userinfo",
            )
        login = BrokerLogin(unquote(parts.username or "") or None, unquote(parts.password or ""))
    path = parts.path
    vhost = "/" if path in ("", "/") else unquote(path[1:])
    if "/" in path[1:]:
        raise QueueUrlError("the path is the virtual host: encode a / in it as %2F", field="vhost")
    address = AmqpAddress(
        host=parts.hostname,
        port=port or (AMQPS_PORT if scheme == "amqps" else AMQP_PORT),
        vhost=_name("vhost", vhost),
        tls=scheme == "amqps",
    )
    return address, login, parse_qsl(parts.query, keep_blank_values=True)


def parse_amqp_target(url: str) -> AmqpTarget:
    """The exchange a webhook URL publishes to; raises ``QueueUrlError`` naming the bad part."""
    address, _, query = _address(url, allow_login=False)
    exchange: str | None = None
    for key, value in query:
        if key == "exchange":
            exchange = _name("exchange", value)
        else:
            raise QueueUrlError(f"unknown query parameter {key[:40]!r} (exchange)", field=key[:40])
    if exchange is None:
        raise QueueUrlError(
            "name the exchange to publish to: amqp://broker/vhost?exchange=erp-events", field="exchange"
        )
    return AmqpTarget(address, exchange)


def _bounded(name: str, text: str, bounds: tuple[int, int]) -> int:
    low, high = bounds
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise QueueUrlError(f"{name} must be an integer in [{low}, {high}], not {text[:40]!r}", field=name)
    return int(text)


def parse_amqp_source(url: str) -> AmqpSourceUrl:
    """The queue a ``whk source`` URL consumes; raises ``QueueUrlError`` naming the bad part."""
    address, login, query = _address(url, allow_login=True)
    queue: str | None = None
    dead: str | None = None
    prefetch = DEFAULT_PREFETCH
    for key, value in query:
        if key == "queue":
            queue = _name("queue", value)
        elif key == "dead_letter_queue":
            dead = _name("dead_letter_queue", value)
        elif key == "prefetch":
            prefetch = _bounded("prefetch", value, PREFETCH_RANGE)
        else:
            raise QueueUrlError(
                f"unknown query parameter {key[:40]!r} (queue, dead_letter_queue, prefetch)", field=key[:40]
            )
    if queue is None:
        raise QueueUrlError("name the queue to consume: amqp://broker/vhost?queue=erp-in", field="queue")
    dead = dead if dead is not None else _name("dead_letter_queue", f"{queue}.dead")
    if dead == queue:
        raise QueueUrlError("the dead-letter queue must differ from the queue", field="dead_letter_queue")
    return AmqpSourceUrl(address, queue, dead, prefetch, login)
