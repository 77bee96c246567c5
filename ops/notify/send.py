"""Send one notice through one channel: httpx for HTTP channels, smtplib for e-mail.

Every destination passes the SSRF policy of webhooks (``whk.urlpolicy``): the URL is checked, the host is
resolved once, every address is checked, and the request goes to a checked address (Host header and TLS
SNI keep the name), so DNS rebinding cannot redirect a notification inside the network. Redirects are not
followed. Any failure raises ``NotifyFailed``; ``permanent`` failures (refused by the policy, a channel
that cannot be decrypted or is malformed) are not worth retrying.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec

from ops.notify import formats
from whk.errors import WhkError
from whk.notice import Notice
from whk.settings import Settings
from whk.signing import decode_secret, signature_headers
from whk.urlpolicy import Address, Network, check_address, check_url, parse_ip_literal

__all__ = ["Channel", "NotifyFailed", "Sender"]

_JSON = msgspec.json.Encoder()


class NotifyFailed(WhkError):
    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Channel(msgspec.Struct, kw_only=True, frozen=True):
    """A decrypted channel (never logged or stored like this)."""

    id: int
    type: str
    target: str
    secret: str | None = None
    config: dict[str, Any] = msgspec.field(default_factory=dict)


async def _resolve(host: str, port: int, allow: Sequence[Network]) -> Address:
    literal = parse_ip_literal(host)
    if literal is not None:
        addresses: list[Address] = [literal]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise NotifyFailed(f"cannot resolve {host}: {exc}") from exc
        addresses = []
        for info in infos:
            found = parse_ip_literal(str(info[4][0]).split("%", 1)[0])
            if found is not None and found not in addresses:
                addresses.append(found)
    for addr in addresses:
        if check_address(addr, allow) is None:
            return addr
    rule = check_address(addresses[0], allow) if addresses else "unresolvable"
    raise NotifyFailed(f"{host} refused by the SSRF policy ({rule})", permanent=True)


class Sender:
    """Sends notices; one per worker (``client`` is the worker's httpx client)."""

    def __init__(self, settings: Settings, client: httpx.AsyncClient) -> None:
        self._s = settings
        self._client = client
        self._allow = settings.core.allow_private_cidrs

    async def send(self, channel: Channel, notice: Notice) -> str:
        """Deliver ``notice``; returns a short description of the answer, raises NotifyFailed."""
        timeout = self._s.ops.notify_timeout_s
        try:
            async with asyncio.timeout(timeout):
                return await self._send(channel, notice)
        except TimeoutError as exc:
            raise NotifyFailed(f"no answer within {timeout:g}s") from exc

    async def _send(self, channel: Channel, notice: Notice) -> str:
        if channel.type == "slack":
            url = channel.target
            base = self._s.ops.slack_base_url
            if base:
                parts = urlsplit(url)
                url = base.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
            return await self._post(url, _JSON.encode(formats.slack_body(notice)), [])
        if channel.type == "pagerduty":
            body = _JSON.encode(formats.pagerduty_body(notice, channel.target))
            return await self._post(self._s.ops.pagerduty_events_url, body, [])
        if channel.type == "webhook":
            if not channel.secret:
                raise NotifyFailed("webhook channel without a signing secret", permanent=True)
            body = _JSON.encode(formats.webhook_body(notice))
            key = decode_secret(channel.secret)
            headers = signature_headers([key], notice.message_id, int(time.time()), body)
            return await self._post(channel.target, body, headers)
        if channel.type == "email":
            return await self._email(channel, notice)
        raise NotifyFailed(f"unknown channel type {channel.type!r}", permanent=True)

    async def _post(self, url: str, body: bytes, headers: list[tuple[str, str]]) -> str:
        rule = check_url(url, self._allow)
        if rule is not None:
            raise NotifyFailed(f"URL refused by the SSRF policy ({rule})", permanent=True)
        target = httpx.URL(url)
        port = target.port or (443 if target.scheme == "https" else 80)
        pinned = await _resolve(target.host, port, self._allow)
        host_header = target.host if target.port is None else f"{target.host}:{target.port}"
        request = self._client.build_request(
            "POST",
            target.copy_with(host=str(pinned)),
            headers=[
                ("Host", host_header),
                ("Content-Type", "application/json"),
                ("User-Agent", self._s.dispatcher.user_agent),
                *headers,
            ],
            content=body,
            extensions={"sni_hostname": target.host} if target.scheme == "https" else {},
        )
        try:
            response = await self._client.send(request)
        except httpx.HTTPError as exc:
            raise NotifyFailed(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 300:
            permanent = response.status_code in (400, 401, 403, 404, 410, 413, 422)
            raise NotifyFailed(f"http {response.status_code}: {response.text[:200]}", permanent=permanent)
        return f"http {response.status_code}"

    async def _email(self, channel: Channel, notice: Notice) -> str:
        cfg = channel.config
        host = str(cfg.get("smtp_host") or "")
        port = int(cfg.get("smtp_port") or 25)
        if not host:
            raise NotifyFailed("e-mail channel without smtp_host", permanent=True)
        pinned = await _resolve(host, port, self._allow)
        msg = formats.email_message(
            notice, sender=str(cfg.get("smtp_from") or "whk@localhost"), to=channel.target
        )
        username = cfg.get("smtp_username")
        starttls = bool(cfg.get("starttls", False))
        timeout = self._s.ops.notify_timeout_s

        def _deliver() -> None:
            with smtplib.SMTP(str(pinned), port, timeout=timeout) as smtp:
                if starttls:
                    smtp.starttls()
                if username and channel.secret:
                    smtp.login(str(username), channel.secret)
                smtp.send_message(msg)

        try:
            await asyncio.to_thread(_deliver)
        except smtplib.SMTPResponseException as exc:
            raise NotifyFailed(f"smtp {exc.smtp_code}: {exc.smtp_error!r}", permanent=False) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise NotifyFailed(f"smtp: {exc}") from exc
        return "smtp 250"
