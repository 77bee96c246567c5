"""Client address of a request: the TCP peer, or X-Forwarded-For only when the peer is a trusted proxy.

Pure functions (no I/O) so the rules are unit-tested exhaustively:

* the peer is not a trusted proxy → the peer is the client, whatever headers say (spoofing is ignored);
* the peer is a trusted proxy → walk X-Forwarded-For from the right, skipping trusted proxies; the first
  untrusted address is the client (left-most entries are client-controlled and never believed first);
* a malformed entry where the walk stops → the last trusted hop (the proxy) is the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

__all__ = ["IPAddress", "Network", "client_address", "in_networks", "parse_address"]


def parse_address(text: str) -> IPAddress | None:
    """An IP address from a peer or header token (``[::1]:80``, ``1.2.3.4:5``, zone ids dropped)."""
    token = text.strip().strip('"')
    if not token:
        return None
    if token.startswith("["):
        if "]" not in token:
            return None
        token = token[1:].split("]", 1)[0]
    elif token.count(":") == 1 and "." in token:
        token = token.split(":", 1)[0]
    token = token.split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(token)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def in_networks(addr: IPAddress, networks: Iterable[Network]) -> bool:
    return any(addr.version == net.version and addr in net for net in networks)


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]
) -> IPAddress | None:
    """The client address for a request from ``peer`` carrying X-Forwarded-For values ``forwarded_for``."""
    peer_addr = parse_address(peer) if peer else None
    if peer_addr is None or not trusted or not in_networks(peer_addr, trusted):
        return peer_addr
    hops = [h for value in forwarded_for for h in value.split(",")]
    client = peer_addr
    for hop in reversed(hops):
        addr = parse_address(hop)
        if addr is None:
            return client
        client = addr
        if not in_networks(addr, trusted):
            return addr
    return client
