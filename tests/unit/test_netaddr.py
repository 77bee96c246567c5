import ipaddress

import pytest

from api.netaddr import client_address, in_networks, parse_address

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


def addr(text):
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        (" 1.2.3.4 ", "1.2.3.4"),
        ("1.2.3.4:5678", "1.2.3.4"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("::ffff:127.0.0.2", "127.0.0.2"),
        ('"1.2.3.4"', "1.2.3.4"),
    ],
)
def test_parse_address(text, expected):
    assert parse_address(text) == addr(expected)


@pytest.mark.parametrize("text", ["", "unknown", "1.2.3", "256.1.1.1", "_hidden", "[::1"])
def test_parse_address_rejects(text):
    assert parse_address(text) is None


def test_untrusted_peer_ignores_forwarded_for():
    assert client_address("127.0.0.2", ["127.0.0.1"], PROXIES) == addr("127.0.0.2")
    assert client_address("127.0.0.2", ["127.0.0.1"], ()) == addr("127.0.0.2")


def test_trusted_peer_uses_rightmost_untrusted_hop():
    # The left-most entry is whatever the client wrote; the proxy appended the real address last.
    assert client_address("10.0.0.5", ["6.6.6.6, 203.0.113.9"], PROXIES) == addr("203.0.113.9")
    assert client_address("10.0.0.5", ["203.0.113.9, 10.1.1.1"], PROXIES) == addr("203.0.113.9")
    assert client_address("10.0.0.5", ["6.6.6.6", "203.0.113.9"], PROXIES) == addr("203.0.113.9")


def test_trusted_peer_without_header_is_the_client():
    assert client_address("10.0.0.5", [], PROXIES) == addr("10.0.0.5")


def test_malformed_hop_stops_the_walk_at_the_last_trusted_hop():
    assert client_address("10.0.0.5", ["1.1.1.1, garbage"], PROXIES) == addr("10.0.0.5")
    assert client_address("10.0.0.5", ["garbage, 10.2.2.2"], PROXIES) == addr("10.2.2.2")


def test_ipv6_proxies_and_clients():
    assert client_address("fd00::1", ["2001:db8::7"], PROXIES) == addr("2001:db8::7")
    assert client_address("2001:db8::9", ["2001:db8::7"], PROXIES) == addr("2001:db8::9")


def test_in_networks_mixed_families():
    nets = [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("2001:db8::/32")]
    assert in_networks(addr("127.0.0.1"), nets)
    assert not in_networks(addr("127.0.0.2"), nets)
    assert in_networks(addr("2001:db8:1::5"), nets)
    assert not in_networks(addr("2001:db9::5"), nets)
