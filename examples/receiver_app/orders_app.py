"""A tiny app that receives WHK's order webhooks: the kind of code an integrator writes.

It depends on nothing of WHK's (the standard library only): it verifies the Standard Webhooks signature
itself, refuses stale timestamps, processes each webhook-id once (WHK delivers at least once) and keeps
the orders it has seen. When an order ships it tells a partner, signing that call the same way and retrying
while the partner answers 5xx — the part ``whk_receiver`` tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

TOLERANCE_S = 300


class BadSignature(Exception):
    """The request is not from WHK (or is too old to trust)."""


def verify(secret: str, headers: dict[str, str], body: bytes, now: float | None = None) -> None:
    """Raise BadSignature unless one v1 signature matches and the timestamp is within 5 minutes."""
    try:
        msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
        signatures = headers["webhook-signature"].split()
    except KeyError as exc:
        raise BadSignature(f"missing header {exc}") from None
    if not timestamp.isdigit() or abs((now or time.time()) - int(timestamp)) > TOLERANCE_S:
        raise BadSignature("timestamp outside the tolerance")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    for item in signatures:
        version, _, encoded = item.partition(",")
        if version == "v1" and hmac.compare_digest(base64.b64decode(encoded), expected):
            return
    raise BadSignature("no signature matches")


def sign(secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": ts,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


@dataclass
class Partner:
    """Where shipped orders are announced, with the partner's signing secret."""

    url: str
    secret: str
    attempts: int = 3


@dataclass
class OrdersApp:
    secret: str
    partner: Partner | None = None
    orders: dict[Any, dict[str, Any]] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        """Process one delivery; the HTTP status to answer."""
        try:
            verify(self.secret, headers, body)
        except BadSignature:
            return 401
        try:
            event = json.loads(body)
            kind, data = event["type"], event["data"]
        except (ValueError, KeyError, TypeError):
            return 400
        with self.lock:
            if headers["webhook-id"] in self.seen:
                return 200  # a retry of something already processed: acknowledge, do nothing
            self.seen.add(headers["webhook-id"])
            if kind.startswith("order.") and data.get("new"):
                order = data["new"]
                self.orders[order["id"]] = order
        if kind == "order.shipped" and self.partner is not None:
            self.announce(headers["webhook-id"], order)
        return 204

    def announce(self, msg_id: str, order: dict[str, Any]) -> int:
        """Tell the partner, retrying 5xx answers; the last status."""
        assert self.partner is not None
        body = json.dumps({"type": "shipment.notified", "data": {"order_id": order["id"]}}).encode()
        status = 0
        for _ in range(self.partner.attempts):
            request = urllib.request.Request(  # noqa: S310 - the partner URL is configuration
                self.partner.url, data=body, headers=sign(self.partner.secret, msg_id, body), method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - as above
                    status = response.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            if status < 500:
                break
        return status

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        if environ["REQUEST_METHOD"] != "POST" or environ["PATH_INFO"] != "/webhooks/whk":
            start_response("404 Not Found", [("content-length", "0")])
            return [b""]
        status = self.handle(headers, body)
        start_response(f"{status} {'OK' if status < 400 else 'Refused'}", [("content-length", "0")])
        return [b""]
