"""The aiohttp sender against real receivers on 127.0.0.1: statuses, faults, caps, deadlines, TLS.

SSRF behaviour lives in test_sender_ssrf.py. Every receiver here listens on loopback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import gzip
import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import standardwebhooks
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dispatcher.classify import classify
from dispatcher.sender import USER_AGENT, OutboundRequest, Sender
from tests.support.http_receivers import (
    StubResolver,
    abort_with_rst,
    free_port,
    install_loopback_guard,
    raw_server,
    read_request_head,
    receiver,
)
from tests.support.wait import async_wait_for
from whk.settings import Settings, load_settings
from whk.signing import decode_secret, generate_secret, signature_headers

BODY = b'{"type":"order.created","timestamp":"2026-01-01T00:00:00Z","data":{"id":1}}'


@pytest.fixture(autouse=True)
async def loopback_only(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """No test here may connect beyond loopback or query DNS."""
    guard = install_loopback_guard(asyncio.get_running_loop(), monkeypatch)
    yield
    assert guard.violations == []


@pytest.fixture(scope="module")
def loopback_settings() -> Settings:
    return load_settings({"WHK_ALLOW_PRIVATE_CIDRS": "127.0.0.0/8,::1/128", "WHK_ENV": "development"})


@pytest.fixture
async def sender(loopback_settings: Settings) -> AsyncIterator[Sender]:
    async with Sender(loopback_settings) as s:
        yield s


def post(url: str, *, deadline: float = 5.0, headers: list[tuple[str, str]] | None = None) -> OutboundRequest:
    return OutboundRequest(
        method="POST",
        url=url,
        headers=headers if headers is not None else [("Content-Type", "application/json")],
        body=BODY,
        deadline_s=deadline,
    )


def status_route(status: int, body: bytes = b"", **headers: str) -> web.Response:
    return web.Response(status=status, body=body, headers=headers)


class TestResponses:
    async def test_2xx_records_status_headers_body_and_peer(self, sender: Sender) -> None:
        async def handler(_: web.Request) -> web.StreamResponse:
            return status_route(200, b'{"ok":true}', **{"X-Receiver": "r1"})

        async with receiver(routes={"/hook": handler}) as r:
            result = await sender.send(post(r.url()))
        assert result.status == 200
        assert result.error_class is None and result.error_detail is None
        assert result.body == b'{"ok":true}' and not result.body_truncated and not result.headers_truncated
        assert result.header("x-receiver") == "r1"
        assert result.remote_ip == "127.0.0.1"
        assert result.location is None
        assert result.duration_ms > 0
        assert classify(result, require_ack=False).kind == "delivered"
        assert r.count == 1
        seen = r.seen[0]
        assert seen.body == BODY
        assert seen.headers["User-Agent"] == USER_AGENT
        assert USER_AGENT.startswith("WHK-Webhooks/")
        assert seen.headers["Accept-Encoding"] == "identity"
        assert seen.headers["Content-Type"] == "application/json"

    async def test_signed_request_verifies_with_standardwebhooks(self, sender: Sender) -> None:
        secret = generate_secret()
        headers = [
            ("Content-Type", "application/json"),
            *signature_headers([decode_secret(secret)], "evt_123", int(time.time()), BODY),
        ]
        async with receiver() as r:
            result = await sender.send(post(r.url(), headers=headers))
        assert result.status == 200
        seen = r.seen[0]
        standardwebhooks.Webhook(secret).verify(seen.body, seen.headers)

    async def test_custom_headers_and_method(self, sender: Sender) -> None:
        async with receiver() as r:
            req = OutboundRequest(
                method="PUT",
                url=r.url("/put"),
                headers=[("Authorization", "Bearer t0k"), ("X-Api-Key", "k"), ("User-Agent", "Custom/1")],
                body=b"[]",
                deadline_s=5,
            )
            result = await sender.send(req)
        assert result.status == 200
        assert r.seen[0].method == "PUT"
        assert r.seen[0].headers["Authorization"] == "Bearer t0k"
        assert r.seen[0].headers["X-Api-Key"] == "k"
        assert r.seen[0].headers["User-Agent"] == "Custom/1"

    async def test_client_owned_headers_cannot_be_overridden(self, sender: Sender) -> None:
        smuggle = [
            ("Content-Length", "0"),
            ("Transfer-Encoding", "chunked"),
            ("Host", "internal.example"),
            ("Connection", "close"),
            ("Expect", "100-continue"),
            ("X-Kept", "yes"),
        ]
        async with receiver() as r:
            first = await sender.send(post(r.url(), headers=smuggle))
            second = await sender.send(post(r.url()))
        assert first.status == second.status == 200
        seen = r.seen[0]
        assert seen.body == BODY
        assert seen.headers["Content-Length"] == str(len(BODY))
        assert "Transfer-Encoding" not in seen.headers and "Expect" not in seen.headers
        assert seen.headers["Host"] == f"127.0.0.1:{r.port}"
        assert seen.headers["X-Kept"] == "yes"
        assert r.seen[1].peer_port == seen.peer_port  # "Connection: close" was not honoured either

    async def test_202_is_awaiting_ack_only_when_acks_are_required(self, sender: Sender) -> None:
        async def handler(_: web.Request) -> web.StreamResponse:
            return status_route(202)

        async with receiver(routes={"/hook": handler}) as r:
            result = await sender.send(post(r.url()))
        assert result.status == 202
        assert classify(result, require_ack=True).kind == "awaiting_ack"
        assert classify(result, require_ack=False).kind == "delivered"

    @pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
    async def test_3xx_is_not_followed_and_location_is_recorded(self, sender: Sender, status: int) -> None:
        async with receiver() as r:

            async def handler(_: web.Request) -> web.StreamResponse:
                return status_route(status, Location=r.url("/elsewhere"))

            r.routes["/hook"] = handler
            result = await sender.send(post(r.url()))
            assert [s.path for s in r.seen] == ["/hook"]  # the target was never requested
        assert result.status == status
        assert result.location == r.url("/elsewhere")
        outcome = classify(result, require_ack=False)
        assert outcome.kind == "retry"
        assert "/elsewhere" in outcome.reason

    @pytest.mark.parametrize(
        ("status", "kind"),
        [(400, "retry"), (401, "retry"), (404, "retry"), (410, "gone"), (500, "retry"), (501, "retry")],
    )
    async def test_4xx_5xx(self, sender: Sender, status: int, kind: str) -> None:
        async def handler(_: web.Request) -> web.StreamResponse:
            return status_route(status, b"nope")

        async with receiver(routes={"/hook": handler}) as r:
            result = await sender.send(post(r.url()))
        assert result.status == status
        assert result.body == b"nope"
        assert result.error_class is None
        assert classify(result, require_ack=False).kind == kind

    @pytest.mark.parametrize("status", [429, 502, 503, 504])
    async def test_throttle_statuses_carry_retry_after(self, sender: Sender, status: int) -> None:
        async def handler(_: web.Request) -> web.StreamResponse:
            return status_route(status, **{"Retry-After": "120"})

        async with receiver(routes={"/hook": handler}) as r:
            result = await sender.send(post(r.url()))
        outcome = classify(result, require_ack=False)
        assert outcome.kind == "throttle"
        assert outcome.retry_after_s == 120

    async def test_retry_after_http_date_against_the_receivers_date(self, sender: Sender) -> None:
        async def handler(_: web.Request) -> web.StreamResponse:
            return status_route(
                503,
                **{"Date": "Wed, 21 Oct 2026 07:28:00 GMT", "Retry-After": "Wed, 21 Oct 2026 07:30:00 GMT"},
            )

        async with receiver(routes={"/hook": handler}) as r:
            result = await sender.send(post(r.url()))
        assert classify(result, require_ack=False).retry_after_s == 120


class TestBody:
    @pytest.mark.parametrize(
        ("size", "truncated"), [(0, False), (19_999, False), (20_000, False), (20_001, True)]
    )
    async def test_cap_edges(self, sender: Sender, size: int, truncated: bool) -> None:
        async def handler(_: web.Request) -> web.StreamResponse:
            return status_route(200, b"a" * size)

        async with receiver(routes={"/hook": handler}) as r:
            result = await sender.send(post(r.url()))
        assert len(result.body) == min(size, 20_000)
        assert result.body_truncated is truncated

    async def test_oversized_body_is_capped_and_not_read_to_the_end(self, sender: Sender) -> None:
        sent = 0

        async def handler(request: web.Request) -> web.StreamResponse:
            nonlocal sent
            resp = web.StreamResponse(status=200)
            resp.content_length = 50_000_000
            await resp.prepare(request)
            try:
                for _ in range(50_000):
                    await resp.write(b"x" * 1000)
                    sent += 1000
            except (ConnectionError, RuntimeError):
                pass
            return resp

        async with receiver(routes={"/hook": handler}) as r:
            result = await sender.send(post(r.url(), deadline=10))
            assert result.status == 200
            assert result.body == b"x" * 20_000 and result.body_truncated
            assert result.error_class is None
            # the connection was dropped, not drained: the next attempt still works
            again = await sender.send(post(r.url("/small")))
        assert again.status == 200
        assert sent < 50_000_000

    async def test_stored_headers_are_capped(self, sender: Sender) -> None:
        async def handler(_: web.Request) -> web.StreamResponse:
            return status_route(200, **{f"X-Fill-{i}": "v" * 8000 for i in range(4)})

        async with receiver(routes={"/hook": handler}) as r:
            result = await sender.send(post(r.url()))
        assert result.status == 200 and result.headers_truncated
        assert sum(len(k) + len(v) for k, v in result.headers) <= 16_384
        assert result.header("X-Fill-0") == "v" * 8000

    async def test_gzip_is_not_decompressed(self, sender: Sender) -> None:
        payload = gzip.compress(b"z" * 1_000_000)  # a small bomb

        async def handler(_: web.Request) -> web.StreamResponse:
            return status_route(200, payload, **{"Content-Encoding": "gzip"})

        async with receiver(routes={"/hook": handler}) as r:
            result = await sender.send(post(r.url()))
        assert result.body == payload[:20_000]
        assert len(result.body) < 20_000 or result.body_truncated


class TestFaults:
    async def test_refused(self, sender: Sender) -> None:
        result = await sender.send(post(f"http://127.0.0.1:{free_port()}/hook"))
        assert result.status is None
        assert result.error_class == "refused"
        assert classify(result, require_ack=False).kind == "retry"

    @pytest.mark.parametrize("how", ["rst", "fin"])
    async def test_connection_dropped_after_the_request(self, sender: Sender, how: str) -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request_head(reader)
            if how == "rst":
                abort_with_rst(writer)
            else:
                writer.close()

        async with raw_server(handler) as srv:
            result = await sender.send(post(srv.url()))
        assert result.status is None
        assert result.error_class == "reset"
        assert classify(result, require_ack=False).kind == "retry"

    async def test_reset_mid_body_keeps_the_status(self, sender: Sender) -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
            await writer.drain()
            await asyncio.sleep(0.05)
            abort_with_rst(writer)

        async with raw_server(handler) as srv:
            result = await sender.send(post(srv.url()))
        assert result.status == 200
        assert result.error_class == "reset"
        assert classify(result, require_ack=False).kind == "delivered"

    async def test_connect_timeout(self, loopback_settings: Settings) -> None:
        # A listener whose accept queue is full drops further SYNs: the connect itself hangs.
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            port = listener.getsockname()[1]
            fillers = []
            try:
                for _ in range(8):
                    filler = socket.socket()
                    filler.setblocking(False)
                    filler.connect_ex(("127.0.0.1", port))
                    fillers.append(filler)
                async with Sender(loopback_settings, connect_timeout_s=0.3) as s:
                    started = time.monotonic()
                    result = await s.send(post(f"http://127.0.0.1:{port}/hook", deadline=5))
                    elapsed = time.monotonic() - started
            finally:
                for filler in fillers:
                    filler.close()
        assert result.status is None and result.error_class == "timeout"
        assert result.error_detail == "no TCP connection within 0.3s"
        assert elapsed < 3

    async def test_hang_ends_at_the_deadline(self, sender: Sender) -> None:
        async def handler(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
            await read_request_head(reader)
            await asyncio.sleep(60)

        async with raw_server(handler) as srv:
            started = time.monotonic()
            result = await sender.send(post(srv.url(), deadline=0.5))
            elapsed = time.monotonic() - started
        assert result.status is None
        assert result.error_class == "timeout"
        assert result.error_detail is not None and "before the response head" in result.error_detail
        assert 0.45 <= elapsed < 3.0
        assert classify(result, require_ack=False).kind == "throttle"

    @pytest.mark.parametrize(
        ("head", "drip", "status", "phase"),
        [
            # status and headers at once, then the body one byte per 0.1 s
            (
                b"HTTP/1.1 500 Oops\r\nContent-Length: 1000\r\n\r\n",
                b"x" * 1000,
                500,
                "reading the body after",
            ),
            # the response head itself one byte per 0.1 s
            (b"", b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 1000, None, "before the response head"),
        ],
    )
    async def test_drip_ends_at_the_deadline(
        self, sender: Sender, head: bytes, drip: bytes, status: int | None, phase: str
    ) -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request_head(reader)
            writer.write(head)
            for byte in drip:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.1)

        async with raw_server(handler) as srv:
            started = time.monotonic()
            result = await sender.send(post(srv.url(), deadline=1.0))
            elapsed = time.monotonic() - started
        assert result.status == status
        assert result.error_class == "timeout"
        assert result.error_detail is not None and phase in result.error_detail
        assert 0.95 <= elapsed < 3.5

    @pytest.mark.parametrize(
        ("reply", "error"),
        [
            (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "protocol"),  # not HTTP at all
            (b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * 100_000 + b"\r\nContent-Length: 0\r\n\r\n", "too_large"),
            (b"HTTP/1.1 200 OK\r\n" + b"X-H: 1\r\n" * 200 + b"Content-Length: 0\r\n\r\n", "too_large"),
        ],
    )
    async def test_malformed_responses(self, sender: Sender, reply: bytes, error: str) -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request_head(reader)
            writer.write(reply)
            await writer.drain()
            await asyncio.sleep(0.2)

        async with raw_server(handler) as srv:
            result = await sender.send(post(srv.url()))
        assert result.status is None
        assert result.error_class == error, result.error_detail

    async def test_header_injection_is_refused_not_raised(self, sender: Sender) -> None:
        async with receiver() as r:
            result = await sender.send(post(r.url(), headers=[("X-Evil", "a\r\nInjected: 1")]))
            assert r.count == 0
        assert result.error_class == "protocol"

    async def test_unresolvable_name_is_dns(self, loopback_settings: Settings) -> None:
        stub = StubResolver([])  # NXDOMAIN from a stub: no DNS query leaves the machine
        async with Sender(loopback_settings, resolver=stub) as s:
            result = await s.send(post("http://no-such-host.example/hook"))
        assert result.status is None
        assert result.error_class == "dns", result.error_detail
        assert stub.calls == ["no-such-host.example"]
        assert s.stats.dials == 0


class TestConnection:
    async def test_keep_alive_reuses_one_connection(self, sender: Sender) -> None:
        async with receiver() as r:
            for _ in range(5):
                assert (await sender.send(post(r.url()))).status == 200
            assert len({s.peer_port for s in r.seen}) == 1
        assert sender.stats.dials == 1

    async def test_environment_proxy_is_ignored(
        self, loopback_settings: Settings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async with receiver() as proxy, receiver() as target:
            for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
                monkeypatch.setenv(name, proxy.url("/"))
            monkeypatch.delenv("NO_PROXY", raising=False)
            monkeypatch.delenv("no_proxy", raising=False)
            async with Sender(loopback_settings) as s:
                result = await s.send(post(target.url()))
            assert result.status == 200
            assert (proxy.count, target.count) == (0, 1)

    async def test_cookies_never_travel(self, sender: Sender) -> None:
        async def handler(_: web.Request) -> web.StreamResponse:
            resp = web.Response(status=200)
            resp.set_cookie("session", "abc")
            return resp

        async with receiver(routes={"/set": handler}) as r:
            await sender.send(post(r.url("/set")))
            await sender.send(post(r.url("/next")))
        assert "Cookie" not in r.seen[1].headers

    async def test_per_host_limit_queues_within_the_deadline(self, loopback_settings: Settings) -> None:
        release = asyncio.Event()

        async def slow(_: web.Request) -> web.StreamResponse:
            await release.wait()
            return status_route(200)

        # WHK_DISPATCHER_HOST_CONCURRENCY sets the limit.
        per_host = dataclasses.replace(loopback_settings.dispatcher, host_concurrency=2)
        settings = dataclasses.replace(loopback_settings, dispatcher=per_host)
        async with receiver(routes={"/hook": slow}) as r, Sender(settings) as s:
            holders = [asyncio.create_task(s.send(post(r.url(), deadline=10))) for _ in range(2)]
            await async_wait_for(lambda: r.count >= 2, 10, "both holders at the stuck host", interval=0.01)
            queued = await asyncio.gather(*(s.send(post(r.url(), deadline=0.3)) for _ in range(3)))
            release.set()
            held = await asyncio.gather(*holders)
        # two connections to the stuck host; the queued attempts ended at their own deadline
        assert s.stats.dials == 2
        assert [q.error_class for q in queued] == ["timeout"] * 3
        assert [h.status for h in held] == [200, 200]

    async def test_ipv6_loopback(self, sender: Sender) -> None:
        try:
            ctx = receiver(host="::1")
            r = await ctx.__aenter__()
        except OSError:
            pytest.skip("no IPv6 loopback on this machine")
        try:
            result = await sender.send(post(r.url()))
        finally:
            await ctx.__aexit__(None, None, None)
        assert result.status == 200
        assert result.remote_ip == "::1"

    async def test_send_requires_an_open_sender(self, loopback_settings: Settings) -> None:
        s = Sender(loopback_settings)
        with pytest.raises(RuntimeError):
            await s.send(post("http://127.0.0.1:9/"))


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "whk-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class TestTls:
    @pytest.fixture
    async def tls_receiver(self, tmp_path: Path) -> AsyncIterator[tuple[str, Path, list[int]]]:
        cert, key = _self_signed(tmp_path)
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert, key)
        hits: list[int] = []

        async def handle(request: web.Request) -> web.StreamResponse:
            hits.append(1)
            return web.Response(text="secure")

        app = web.Application()
        app.router.add_post("/hook", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
        await site.start()
        port = runner.addresses[0][1]
        try:
            yield f"https://127.0.0.1:{port}/hook", cert, hits
        finally:
            await runner.cleanup()

    async def test_untrusted_certificate_is_refused(
        self, sender: Sender, tls_receiver: tuple[str, Path, list[int]]
    ) -> None:
        url, _, hits = tls_receiver
        result = await sender.send(post(url))
        assert result.status is None
        assert result.error_class == "tls", result.error_detail
        assert hits == []

    async def test_trusted_certificate_is_accepted(
        self, loopback_settings: Settings, tls_receiver: tuple[str, Path, list[int]]
    ) -> None:
        url, cert, hits = tls_receiver
        ctx = ssl.create_default_context(cafile=str(cert))
        async with Sender(loopback_settings, ssl_context=ctx) as s:
            result = await s.send(post(url))
        assert result.status == 200 and result.body == b"secure"
        assert hits == [1]
