"""Webhook simulator: send one signed synthetic event to an endpoint and report what came back.

The request goes out with httpx (the API never imports the dispatcher) under the same SSRF policy as
deliveries: the URL is checked (scheme, userinfo, literal and odd-form IPs, metadata names), the host is
resolved ONCE, every resolved address is checked, and the connection is made to a checked address (the
Host header and TLS SNI / certificate check keep the original name). No redirects, no proxies from the
environment, one overall deadline, and at most ``EXCERPT_BYTES`` of the body are read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from whk.urlpolicy import check_address, check_url

__all__ = ["EXCERPT_BYTES", "SimulatorResult", "send_once"]

EXCERPT_BYTES = 4096
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class SimulatorResult:
    status: int | None
    duration_ms: float
    headers: dict[str, str]
    excerpt: bytes
    truncated: bool
    error_class: str | None
    error_detail: str | None


def _failure(error_class: str, detail: str, started: float) -> SimulatorResult:
    return SimulatorResult(
        status=None,
        duration_ms=(time.perf_counter() - started) * 1000,
        headers={},
        excerpt=b"",
        truncated=False,
        error_class=error_class,
        error_detail=detail[:500],
    )


def _blocked(rule: str, started: float) -> SimulatorResult:
    return _failure("ssrf_blocked", f"blocked by the SSRF policy: {rule}", started)


async def _resolve(host: str, port: int) -> list[IpAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[IpAddress] = []
    for info in infos:
        addr = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if addr not in seen:
            seen.append(addr)
    return seen


def _classify(exc: BaseException) -> tuple[str, str]:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
        return "timeout", text
    if isinstance(exc, socket.gaierror):
        return "dns", text
    if isinstance(exc, ssl.SSLError) or "CERTIFICATE" in text.upper() or "SSL" in text.upper():
        return "tls", text
    if isinstance(exc, httpx.ConnectError):
        return ("refused" if "refused" in text.lower() else "connect"), text
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.LocalProtocolError)):
        return "protocol", text
    if isinstance(exc, httpx.ReadError):
        return "reset", text
    return "connect", text


async def send_once(
    *,
    url: str,
    method: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    timeout_s: float,
    allow: Sequence[Network],
) -> SimulatorResult:
    """Send one request; never raises for network trouble (it is reported in the result)."""
    started = time.perf_counter()
    rule = check_url(url, allow)
    if rule is not None:
        return _blocked(rule, started)
    if not url.lower().startswith(("http://", "https://")):
        # A queue target (docs/queues.md): the simulator speaks HTTP only; nothing is sent.
        return _failure(
            "protocol", "the test send speaks HTTP(S) only; emit an event to test a queue", started
        )
    target = httpx.URL(url)
    host = target.host
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        async with asyncio.timeout(timeout_s):
            addresses = await _resolve(host, port)
            allowed = [a for a in addresses if check_address(a, allow) is None]
            if not allowed:
                first = check_address(addresses[0], allow) if addresses else "unresolvable"
                return _blocked(first or "unresolvable", started)
            pinned = allowed[0]
            ip_host = f"[{pinned}]" if pinned.version == 6 else str(pinned)
            host_header = host if target.port is None else f"{host}:{target.port}"
            request_headers = [(k, v) for k, v in headers if k.lower() != "host"]
            request_headers.append(("Host", host_header))
            async with httpx.AsyncClient(
                trust_env=False, follow_redirects=False, timeout=timeout_s, verify=True
            ) as client:
                request = client.build_request(
                    method,
                    target.copy_with(host=ip_host.strip("[]")),
                    headers=request_headers,
                    content=body,
                    extensions={"sni_hostname": host} if target.scheme == "https" else {},
                )
                response = await client.send(request, stream=True)
                try:
                    chunks: list[bytes] = []
                    size = 0
                    truncated = False
                    async for chunk in response.aiter_raw():
                        chunks.append(chunk)
                        size += len(chunk)
                        if size > EXCERPT_BYTES:
                            truncated = True
                            break
                finally:
                    await response.aclose()
                data = b"".join(chunks)
                return SimulatorResult(
                    status=response.status_code,
                    duration_ms=(time.perf_counter() - started) * 1000,
                    headers=dict(response.headers.items()),
                    excerpt=data[:EXCERPT_BYTES],
                    truncated=truncated or len(data) > EXCERPT_BYTES,
                    error_class=None,
                    error_detail=None,
                )
    except (OSError, httpx.HTTPError, TimeoutError, ssl.SSLError) as exc:
        error_class, detail = _classify(exc)
        return _failure(error_class, detail, started)
