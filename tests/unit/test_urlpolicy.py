"""The SSRF policy: every deny rule, embedded IPv4 forms, literal spellings, URLs and exemptions."""

from __future__ import annotations

import ipaddress
import random
import socket

import pytest

from whk.errors import WhkError
from whk.urlpolicy import (
    UrlPolicyError,
    check_address,
    check_url,
    embedded_ipv4,
    ensure_url,
    parse_ip_literal,
)

ip = ipaddress.ip_address
LOOPBACK_ALLOW = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))

DENIED = [
    # IPv4
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("100.64.0.1", "shared-address-space"),
    ("100.127.255.254", "shared-address-space"),
    ("100.100.100.200", "metadata"),
    ("127.0.0.1", "loopback"),
    ("127.0.0.2", "loopback"),
    ("127.255.255.255", "loopback"),
    ("169.254.0.1", "link-local"),
    ("169.254.169.254", "metadata"),
    ("169.254.170.2", "metadata"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.0.0.1", "ietf-protocol"),
    ("192.0.0.8", "ietf-protocol"),
    ("192.0.0.170", "ietf-protocol"),
    ("192.0.0.192", "metadata"),
    ("192.0.2.1", "documentation"),
    ("192.88.99.1", "6to4-relay"),
    ("192.168.1.1", "private"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.254", "reserved"),
    ("255.255.255.255", "broadcast"),
    # IPv6
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("100::1", "discard-only"),
    ("2001:db8::1", "documentation"),
    ("2001:db8:ffff::1", "documentation"),
    ("3fff::1", "documentation"),
    ("3fff:fff::1", "documentation"),
    ("2001:2::1", "benchmarking"),
    ("2001:10::1", "orchid"),
    ("2001:20::1", "orchid"),
    ("2001:100::1", "ietf-protocol"),
    ("5f00::1", "srv6-sid"),
    ("fc00::1", "unique-local"),
    ("fd12:3456::1", "unique-local"),
    ("fd00:ec2::254", "metadata"),
    ("fe80::1", "link-local"),
    ("febf::1", "link-local"),
    ("fec0::1", "site-local"),
    ("feff::1", "site-local"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("64:ff9b:1::808:808", "nat64-local"),
    ("1::", "reserved"),
    ("4000::1", "reserved"),
    ("e000::1", "reserved"),
    ("::1:0:0:1", "reserved"),
    ("::8.8.8.8", "reserved"),  # deprecated IPv4-compatible form
    # IPv4 embedded in IPv6: the embedded address decides the rule name
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:7f00:2", "loopback"),
    ("::ffff:169.254.169.254", "metadata"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:0.0.0.0", "unspecified"),
    ("::127.0.0.1", "loopback"),
    ("::10.1.2.3", "private"),
    ("64:ff9b::7f00:1", "loopback"),
    ("64:ff9b::a9fe:a9fe", "metadata"),
    ("64:ff9b::192.168.0.1", "private"),
    ("64:ff9b:1::7f00:1", "loopback"),
    ("2002:7f00:1::", "loopback"),
    ("2002:a9fe:a9fe::1", "metadata"),
    ("2002:c0a8:101::1", "private"),
    # Teredo: server 65.54.227.120, client 192.0.2.45 stored inverted
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "documentation"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # client ~0x80fffffe = 127.0.0.1
    ("2001:0:7f00:1::", "loopback"),  # server 127.0.0.1
    ("2001:0:808:808:0:0:f7f7:f7f7", "ietf-protocol"),  # public parts: still non-global space
]

ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "100.63.255.255",
    "100.128.0.0",
    "169.253.255.255",
    "172.15.255.255",
    "172.32.0.0",
    "192.0.1.1",
    "192.167.255.255",
    "198.17.255.255",
    "198.20.0.0",
    "223.255.255.255",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "2001:4860:4860::8888",
    "2001:200::1",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
]


@pytest.mark.parametrize(("addr", "rule"), DENIED)
def test_denied_addresses_name_their_rule(addr: str, rule: str) -> None:
    assert check_address(ip(addr)) == rule


@pytest.mark.parametrize("addr", ALLOWED)
def test_public_addresses_are_allowed(addr: str) -> None:
    assert check_address(ip(addr)) is None


@pytest.mark.parametrize(
    "addr",
    [
        "224.0.0.1",
        "ff02::1",
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
        "5f00::1",
        "3fff::1",
        "fec0::1",
        "192.0.0.192",
    ],
)
def test_addresses_python_calls_global_are_refused(addr: str) -> None:
    # The reason the deny list is explicit (field notes): is_global says True (or not False) here.
    assert check_address(ip(addr)) is not None


def test_scoped_link_local_is_refused() -> None:
    assert check_address(ipaddress.IPv6Address("fe80::1%eth0")) == "link-local"
    assert check_address(ipaddress.IPv6Address("2606:4700::1%1")) is None


def test_embedded_ipv4_unpacking() -> None:
    v4 = ipaddress.IPv4Address
    assert embedded_ipv4(ipaddress.IPv6Address("::ffff:1.2.3.4")) == (v4("1.2.3.4"),)
    assert embedded_ipv4(ipaddress.IPv6Address("::1.2.3.4")) == (v4("1.2.3.4"),)
    assert embedded_ipv4(ipaddress.IPv6Address("64:ff9b::1.2.3.4")) == (v4("1.2.3.4"),)
    assert embedded_ipv4(ipaddress.IPv6Address("64:ff9b:1::1.2.3.4")) == (v4("1.2.3.4"),)
    assert embedded_ipv4(ipaddress.IPv6Address("2002:102:304::")) == (v4("1.2.3.4"),)
    teredo = ipaddress.IPv6Address("2001:0:4136:e378:8000:63bf:3fff:fdd2")
    assert embedded_ipv4(teredo) == (v4("65.54.227.120"), v4("192.0.2.45"))
    assert teredo.teredo == embedded_ipv4(teredo)  # agrees with the stdlib's decoding
    assert embedded_ipv4(ipaddress.IPv6Address("2606:4700::1")) == ()


class TestExemptions:
    def test_allow_list_exempts_exactly_its_networks(self) -> None:
        allow = [ipaddress.ip_network("127.0.0.1/32")]
        assert check_address(ip("127.0.0.1"), allow) is None
        assert check_address(ip("127.0.0.2"), allow) == "loopback"
        assert check_address(ip("169.254.169.254"), allow) == "metadata"

    def test_mapped_form_of_an_exempt_address_is_exempt(self) -> None:
        allow = [ipaddress.ip_network("127.0.0.0/8")]
        assert check_address(ip("::ffff:127.0.0.1"), allow) is None
        assert check_address(ip("::127.0.0.1"), allow) is None

    def test_translated_forms_are_not_exempt_by_their_ipv4(self) -> None:
        # NAT64/6to4 reach a *different* host (the translator/relay), so only an exact network exempts.
        allow = [ipaddress.ip_network("127.0.0.0/8")]
        assert check_address(ip("64:ff9b::7f00:1"), allow) == "loopback"
        assert check_address(ip("2002:7f00:1::"), allow) == "loopback"
        assert check_address(ip("64:ff9b::7f00:1"), [ipaddress.ip_network("64:ff9b::/96")]) is None

    def test_ipv6_exemption(self) -> None:
        assert check_address(ip("::1"), LOOPBACK_ALLOW) is None
        assert check_address(ip("fd00::1"), [ipaddress.ip_network("fd00::/8")]) is None
        assert check_address(ip("fe80::1"), LOOPBACK_ALLOW) == "link-local"

    def test_mismatched_families_never_match(self) -> None:
        assert check_address(ip("::1"), [ipaddress.ip_network("0.0.0.0/0")]) == "loopback"
        assert check_address(ip("127.0.0.1"), [ipaddress.ip_network("::/0")]) == "loopback"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0177.1", "127.0.0.1"),
        ("0x7F.0.0.0x1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("169.254.43518", "169.254.169.254"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),
        ("8.8.8.8.", "8.8.8.8"),
        ("[::1]", "::1"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("[::ffff:7f00:1]", "::ffff:7f00:1"),
    ],
)
def test_ip_literal_spellings(host: str, expected: str) -> None:
    assert parse_ip_literal(host) == ip(expected)


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "256.0.0.1",
        "1.2.3.4.5",
        "4294967296",
        "1.16777216",
        "1.2.65536",
        "08.0.0.1",
        "0x1g",
        "",
        "1..2",
        "[zz]",
        "-1",
        "0x",
        "0x.1",
        "00x1",
        "1.2.3.0x",
    ],
)
def test_non_literals(host: str) -> None:
    assert parse_ip_literal(host) is None
    if host and "[" not in host:
        with pytest.raises(OSError):
            socket.inet_aton(host)  # libc agrees: not an address


@pytest.mark.parametrize(
    "host",
    [
        "2130706433",
        "0x7f.1",
        "127.1",
        "0177.0.0.1",
        "0x7f000001",
        "169.254.43518",
        "0xa9fea9fe",
        "017700000001",
    ],
)
def test_literal_parser_agrees_with_libc(host: str) -> None:
    # inet_aton is what getaddrinfo falls back to: the same spelling must mean the same address.
    assert parse_ip_literal(host) == ipaddress.IPv4Address(socket.inet_aton(host))


URLS = [
    ("https://hooks.example.com/whk", None),
    ("http://hooks.example.com:8080/a?b=c#d", None),
    ("HTTPS://Hooks.Example.COM/", None),
    ("https://8.8.8.8/", None),
    ("https://[2606:4700::1111]:443/x", None),
    ("https://münchen.example/", None),
    ("https://host.example./", None),
    # message-queue targets (docs/queues.md): same host rules, never a login in the URL
    ("redis://cache.example.com:6379/orders", None),
    ("rediss://cache.example.com/orders?maxlen=1000", None),
    ("amqp://mq.example.com/whk", None),
    ("amqps://mq.example.com:5671/whk", None),
    ("redis://:secret@cache.example.com/orders", "userinfo"),
    ("amqp://guest:guest@mq.example.com/", "userinfo"),
    ("redis://127.0.0.1:6379/orders", "loopback"),
    ("redis://10.0.0.5/orders", "private"),
    ("amqp://169.254.169.254/", "metadata"),
    ("redis://metadata.google.internal/x", "metadata"),
    ("mqtt://broker.example.com/", "scheme"),
    # scheme / userinfo / shape
    ("ftp://example.com/", "scheme"),
    ("file:///etc/passwd", "scheme"),
    ("gopher://127.0.0.1:6379/_x", "scheme"),
    ("javascript:alert(1)", "scheme"),
    ("//example.com/", "scheme"),
    ("https://user:pw@example.com/", "userinfo"),
    ("https://user@example.com/", "userinfo"),
    ("https://example.com@127.0.0.1/", "userinfo"),
    ("http://", "invalid-host"),
    ("http:///path", "invalid-host"),
    ("http://exa mple.com/", "invalid-url"),
    ("http://example.com\\@127.0.0.1/", "invalid-url"),
    ("http://example.com\r\nHost: x/", "invalid-url"),
    ("http://example.com/\x7f", "invalid-url"),
    ("https://example.com/" + "a" * 2028, None),  # 2048 characters
    ("https://example.com/" + "a" * 2029, "invalid-url"),
    ("http://example.com/\u2003", "invalid-url"),
    ("http://example.com/\x00", "invalid-url"),
    ("http://example.com:0/", "invalid-url"),
    ("http://example.com:99999/", "invalid-url"),
    ("http://example.com:port/", "invalid-url"),
    ("http://[zz]/", "invalid-url"),
    ("http://[::1/", "invalid-url"),
    ("http://a..b/", "invalid-host"),
    ("http://exa%6dple.com/", "invalid-host"),
    ("http://1.2.3.4.5/", "invalid-host"),
    ("http://256.1.1.1/", "invalid-host"),
    ("http://10.0x10/", "private"),
    ("http://1.2.3.0x/", "invalid-host"),
    # literal IPs in every spelling
    ("http://127.0.0.1/", "loopback"),
    ("http://127.0.0.2:8080/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://0x7f.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://0/", "unspecified"),
    ("http://0.0.0.0:80/", "unspecified"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://0xa9fea9fe/", "metadata"),
    ("http://[::1]/", "loopback"),
    ("http://[::]/", "unspecified"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:169.254.169.254]/", "metadata"),
    ("http://[64:ff9b::7f00:1]/", "loopback"),
    ("http://[2002:7f00:1::]/", "loopback"),
    ("http://[fe80::1%25eth0]/", "link-local"),
    ("http://[fd00::1]:8443/", "unique-local"),
    # fullwidth digits and an ideographic dot, IDNA-mapped to 127.0.0.1
    ("http://\uff11\uff12\uff17\u3002\uff10.\uff10.\uff11/", "loopback"),
    # names
    ("http://localhost/", "loopback"),
    ("http://LOCALHOST:8080/", "loopback"),
    ("http://api.localhost/", "loopback"),
    ("http://localhost./", "loopback"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
    ("http://METADATA.google.internal./", "metadata"),
    ("http://metadata/", "metadata"),
    ("http://metadata.goog/", "metadata"),
    ("http://instance-data/latest/", "metadata"),
    ("http://instance-data.ec2.internal/", "metadata"),
]


@pytest.mark.parametrize(("url", "rule"), URLS)
def test_check_url(url: str, rule: str | None) -> None:
    assert check_url(url) == rule


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://127.0.0.1:8080/hook", None),
        ("http://2130706433/", None),
        ("http://[::1]:9/", None),
        ("http://[::ffff:127.0.0.1]/", None),
        ("http://localhost:8080/", None),
        ("http://169.254.169.254/", "metadata"),
        ("http://10.0.0.1/", "private"),
        ("http://metadata.google.internal/", "metadata"),
        ("https://user:pw@127.0.0.1/", "userinfo"),
    ],
)
def test_check_url_with_loopback_exempt(url: str, rule: str | None) -> None:
    assert check_url(url, LOOPBACK_ALLOW) == rule


def test_ensure_url_raises_with_rule() -> None:
    ensure_url("https://hooks.example.com/")
    with pytest.raises(UrlPolicyError) as info:
        ensure_url("http://169.254.169.254/")
    assert info.value.rule == "metadata"
    assert isinstance(info.value, WhkError)
    assert "metadata" in str(info.value)
    assert info.value.hint


def test_everything_python_calls_non_global_is_refused() -> None:
    """Our deny list is a superset of the stdlib's non-global ranges (seeded samples)."""
    rng = random.Random(20261129)
    for _ in range(50_000):
        v4 = ipaddress.IPv4Address(rng.getrandbits(32))
        if not v4.is_global:
            assert check_address(v4) is not None, v4
    tops = [0x0000, 0x0064, 0x0100, 0x2001, 0x2002, 0x3FFF, 0x5F00, 0xFC00, 0xFD00, 0xFE80, 0xFEC0, 0xFF02]
    mapped = ipaddress.ip_network("::ffff:0:0/96")
    for _ in range(50_000):
        top = rng.choice(tops)
        # keep the next 16 bits small half of the time so narrow prefixes (2001:db8::/32...) are hit
        second = rng.getrandbits(16) if rng.random() < 0.5 else rng.choice([0, 1, 2, 0x10, 0x20, 0xDB8])
        v6 = ipaddress.IPv6Address((top << 112) | (second << 96) | rng.getrandbits(96))
        if not v6.is_global and v6 not in mapped:
            assert check_address(v6) is not None, v6
