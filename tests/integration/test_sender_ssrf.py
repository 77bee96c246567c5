"""SSRF: the sender refuses private/metadata destinations at connect time; 0 requests reach them.

No packet may leave loopback, whatever the code under test does:
* every test runs with the event loop's ``sock_connect`` wrapped so a non-loopback destination
  fails the test before any SYN is sent (``dial_guard``), and asserts the sender dialed nothing
  it should not have;
* host names are answered by a stubbed resolver (no DNS traffic);
* ``test_suite_in_an_isolated_network_namespace`` re-runs this module inside ``unshare --net``
  (root only), where no route beyond loopback exists at all.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from dispatcher import sender as sender_module
from dispatcher.classify import classify
from dispatcher.retry import RetryPolicy, next_delay
from dispatcher.sender import OutboundRequest, Sender, SsrfBlockedError
from tests.support.http_receivers import Receiver, StubResolver, install_loopback_guard, receiver
from whk.settings import Settings, load_settings
from whk.urlpolicy import check_address, check_url

IN_NETNS = os.environ.get("SENDER_TEST_NETNS") == "1"
ROOT = Path(__file__).resolve().parents[2]


def _settings(allow: str) -> Settings:
    return load_settings({"WHK_ALLOW_PRIVATE_CIDRS": allow, "WHK_ENV": "development"})


def post(url: str, deadline: float = 3.0) -> OutboundRequest:
    return OutboundRequest(method="POST", url=url, headers=[], body=b"{}", deadline_s=deadline)


@pytest.fixture
async def dial_guard(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[str]]:
    """Every address the loop connects to; a connect beyond loopback or a DNS query fails the test."""
    guard = install_loopback_guard(asyncio.get_running_loop(), monkeypatch)
    yield guard.dialed
    assert guard.violations == []


@pytest.fixture
async def strict(dial_guard: list[str]) -> AsyncIterator[Sender]:
    """A sender with no exemptions at all (production policy)."""
    async with Sender(_settings("")) as s:
        yield s


@pytest.fixture
async def target() -> AsyncIterator[Receiver]:
    """A receiver on 127.0.0.1 that must never be reached by a blocked attempt."""
    async with receiver() as r:
        yield r


def assert_blocked(result: Any, rule: str) -> None:
    assert result.status is None
    assert result.error_class == "ssrf_blocked", result.error_detail
    assert result.error_detail.startswith(rule), result.error_detail
    assert classify(result, require_ack=False).kind == "blocked"


class TestLiteralAddresses:
    @pytest.mark.parametrize(
        ("host", "rule"),
        [
            ("127.0.0.1", "loopback"),
            ("2130706433", "loopback"),
            ("0x7f.1", "loopback"),
            ("127.1", "loopback"),
            ("0177.0.0.1", "loopback"),
            ("[::ffff:127.0.0.1]", "loopback"),
            ("[::1]", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("0", "unspecified"),
            ("localhost", "loopback"),
        ],
    )
    async def test_loopback_spellings_never_reach_the_receiver(
        self, strict: Sender, target: Receiver, dial_guard: list[str], host: str, rule: str
    ) -> None:
        result = await strict.send(post(f"http://{host}:{target.port}/hook"))
        assert_blocked(result, rule)
        assert target.count == 0
        assert strict.stats.dials == 0 and dial_guard == []

    async def test_127_0_0_2_with_only_127_0_0_1_exempt(self, dial_guard: list[str]) -> None:
        async with receiver(host="127.0.0.2") as r, Sender(_settings("127.0.0.1/32")) as s:
            result = await s.send(post(r.url()))
            assert_blocked(result, "loopback")
            assert r.count == 0
        assert s.stats.dials == 0 and dial_guard == []

    @pytest.mark.parametrize(
        ("url", "rule"),
        [
            ("http://169.254.169.254/latest/meta-data/", "metadata"),
            ("http://[::ffff:169.254.169.254]/", "metadata"),
            ("http://0xa9fea9fe/", "metadata"),
            ("http://169.254.1.1/", "link-local"),
            ("http://10.0.0.1/", "private"),
            ("http://192.168.1.1:8080/", "private"),
            ("http://100.64.0.1/", "shared-address-space"),
            ("http://[fd00::1]/", "unique-local"),
            ("http://[64:ff9b::a9fe:a9fe]/", "metadata"),
            ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
            ("ftp://example.com/", "scheme"),
            ("http://user:pw@example.com/", "userinfo"),
        ],
    )
    async def test_refused_before_any_resolution_or_dial(
        self, dial_guard: list[str], url: str, rule: str
    ) -> None:
        stub = StubResolver(["93.184.215.14"])
        async with Sender(_settings("127.0.0.0/8"), resolver=stub) as s:
            result = await s.send(post(url))
        assert_blocked(result, rule)
        assert stub.calls == []
        assert s.stats.dials == 0 and dial_guard == []


class TestRedirect:
    async def test_redirect_to_metadata_is_recorded_not_followed(self, dial_guard: list[str]) -> None:
        async def handler(_: web.Request) -> web.StreamResponse:
            return web.Response(status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})

        async with receiver(routes={"/hook": handler}) as r, Sender(_settings("127.0.0.1/32")) as s:
            result = await s.send(post(r.url()))
            assert r.count == 1
        assert result.status == 302
        assert result.location == "http://169.254.169.254/latest/meta-data/"
        assert classify(result, require_ack=False).kind == "retry"
        assert set(dial_guard) == {"127.0.0.1"}
        assert set(s.stats.dialed) == {"127.0.0.1"}


class TestResolvedAddresses:
    HOST = "hooks.rebind.example"

    async def test_rebinding_allowed_at_validation_blocked_at_connect(self, dial_guard: list[str]) -> None:
        """The API validated the name when it resolved to an allowed address; at delivery time the
        same name answers a blocked one: refused at connect time, nothing reaches the receiver."""
        stub = StubResolver(["127.0.0.1"], ["127.0.0.2"])
        allow = [ipaddress.ip_network("127.0.0.1/32")]
        async with receiver(host="127.0.0.2") as evil:
            url = f"http://{self.HOST}:{evil.port}/hook"
            # registration-time validation (API): URL shape and the answer it got then
            assert check_url(url, allow) is None
            first = await stub.resolve(self.HOST, evil.port)
            assert check_address(ipaddress.ip_address(first[0]["host"]), allow) is None
            async with Sender(_settings("127.0.0.1/32"), resolver=stub) as s:
                result = await s.send(post(url))
            assert_blocked(result, "loopback")
            assert result.error_detail == f"loopback: 127.0.0.2 (resolved from {self.HOST})"
            assert result.remote_ip == "127.0.0.2"
            assert evil.count == 0
        assert stub.calls == [self.HOST, self.HOST]
        assert s.stats.dials == 0 and dial_guard == []

    async def test_rebinding_between_deliveries(self, dial_guard: list[str]) -> None:
        """First delivery: allowed answer, delivered. Later (new resolution): metadata → blocked."""
        stub = StubResolver(["127.0.0.1"], ["169.254.169.254"])
        async with receiver() as good:
            url = f"http://{self.HOST}:{good.port}/hook"
            async with Sender(_settings("127.0.0.1/32"), resolver=stub) as s:
                assert (await s.send(post(url))).status == 200
            async with Sender(_settings("127.0.0.1/32"), resolver=stub) as s2:
                result = await s2.send(post(url))
            assert_blocked(result, "metadata")
            assert good.count == 1
        assert s.stats.dials == 1 and s2.stats.dials == 0
        assert dial_guard == ["127.0.0.1"]

    async def test_one_blocked_record_refuses_the_host(self, dial_guard: list[str]) -> None:
        stub = StubResolver(["127.0.0.1", "169.254.169.254"])
        async with receiver() as good, Sender(_settings("127.0.0.1/32"), resolver=stub) as s:
            result = await s.send(post(f"http://{self.HOST}:{good.port}/hook"))
            assert_blocked(result, "metadata")
            assert good.count == 0
        assert s.stats.dials == 0 and dial_guard == []

    @pytest.mark.parametrize(
        ("answer", "rule"),
        [
            ("10.1.2.3", "private"),
            ("::ffff:127.0.0.2", "loopback"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("64:ff9b::7f00:1", "loopback"),
            ("2002:a9fe:a9fe::", "metadata"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
        ],
    )
    async def test_blocked_answers(self, dial_guard: list[str], answer: str, rule: str) -> None:
        stub = StubResolver([answer])
        async with Sender(_settings("127.0.0.1/32"), resolver=stub) as s:
            result = await s.send(post(f"http://{self.HOST}:8080/hook"))
        assert_blocked(result, rule)
        assert s.stats.dials == 0 and s.stats.blocked == 1 and dial_guard == []

    async def test_retries_of_a_blocked_delivery_follow_the_schedule(self, dial_guard: list[str]) -> None:
        stub = StubResolver(["10.0.0.1"])
        async with Sender(_settings(""), resolver=stub) as s:
            result = await s.send(post(f"http://{self.HOST}/hook"))
        outcome = classify(result, require_ack=False)
        policy = RetryPolicy(schedule_s=(5, 300, 1800, 7200, 18000, 36000, 36000))
        delays = [next_delay(policy, n, outcome, random.Random(1)) for n in range(1, 9)]
        assert all(d is not None for d in delays[:7]) and delays[7] is None
        no_wait = RetryPolicy(schedule_s=(5,), retry_blocked=False)
        assert next_delay(no_wait, 1, outcome, random.Random(1)) is None


class TestSocketFactoryDefence:
    """Even if the URL check were wrong, the connector's socket factory refuses the address."""

    async def test_factory_refuses_blocked_addresses(self) -> None:
        async with Sender(_settings("127.0.0.1/32")) as s:
            with pytest.raises(SsrfBlockedError) as info:
                s._socket_factory((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 80)))
            assert info.value.rule == "metadata"
            with pytest.raises(SsrfBlockedError):
                s._socket_factory(
                    (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::ffff:127.0.0.2", 80, 0, 0))
                )
            sock = s._socket_factory((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80)))
            sock.close()
        assert s.stats.dials == 1

    @pytest.mark.parametrize(
        ("host", "error_class"),
        [
            (
                "127.0.0.2",
                "ssrf_blocked",
            ),  # IP literal: aiohttp skips the resolver; the socket factory refuses
            ("[::ffff:127.0.0.2]", "ssrf_blocked"),
            (
                "0x7f.0.0.2",
                "ssrf_blocked",
            ),  # a "name" to yarl: getaddrinfo → 127.0.0.2 → the resolver refuses
            ("2130706434", "protocol"),  # yarl itself refuses a non-canonical IPv4 literal
        ],
    )
    async def test_blocked_even_with_a_broken_url_check(
        self, monkeypatch: pytest.MonkeyPatch, dial_guard: list[str], host: str, error_class: str
    ) -> None:
        monkeypatch.setattr(sender_module, "check_url", lambda url, allow: None)
        async with receiver(host="127.0.0.2") as evil, Sender(_settings("127.0.0.1/32")) as s:
            result = await s.send(post(f"http://{host}:{evil.port}/hook"))
            assert result.status is None
            assert result.error_class == error_class, result.error_detail
            assert evil.count == 0
        assert s.stats.dials == 0 and dial_guard == []


@pytest.mark.skipif(not IN_NETNS, reason="only inside the isolated network namespace")
def test_namespace_has_no_route_beyond_loopback() -> None:
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex(("169.254.169.254", 80)) != 0


@pytest.mark.slow  # runs this whole module again in a new network namespace
def test_suite_in_an_isolated_network_namespace() -> None:
    """Re-run this module where no route beyond loopback exists (root + unshare required)."""
    if IN_NETNS:
        pytest.skip("already inside the isolated namespace")
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip to create a loopback-only network namespace")
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"unshare --net is not permitted here: {probe.stderr.decode().strip()}")
    cmd = (
        "ip link set lo up && exec "
        f"{sys.executable} -m pytest -q -p no:cacheprovider {Path(__file__).relative_to(ROOT)}"
    )
    env = {**os.environ, "SENDER_TEST_NETNS": "1"}
    run = subprocess.run(
        ["unshare", "--net", "sh", "-c", cmd],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=240,
        check=False,
    )
    out = run.stdout.decode() + run.stderr.decode()
    assert run.returncode == 0, out
    assert " passed" in out and "failed" not in out, out
