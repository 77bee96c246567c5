"""The SSRF policy: which destinations WHK may send a webhook to. One policy, two callers.

* The API validates a webhook URL when it is registered or changed (``check_url``): scheme, userinfo,
  literal IP addresses in every spelling ``getaddrinfo``/``inet_aton`` accepts, metadata host names.
* The dispatcher checks **every resolved address** right before it connects (``check_address``,
  called from the sender's resolver and socket factory), so a host name that resolves to a private
  address at delivery time is refused even if it looked fine at registration (DNS rebinding).

The deny list is explicit on purpose: ``ipaddress.is_global`` on Python 3.11 calls multicast, NAT64
``64:ff9b::7f00:1``, 6to4 ``2002:7f00:1::``, ``5f00::1``, ``3fff::1``, ``fec0::1`` and 192.0.0.192 global.
IPv6 forms that embed an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) are
unpacked and the embedded address is checked with the IPv4 rules first, so ``::ffff:127.0.0.1``
reports ``loopback``. In IPv6 only global unicast (2000::/3) is allowed at all; everything outside
it is refused (``reserved`` unless a more precise rule names it).

Rule names returned (stable, stored in attempt logs and shown by the API): ``loopback``,
``unspecified``, ``private``, ``shared-address-space``, ``link-local``, ``metadata``,
``ietf-protocol``, ``documentation``, ``benchmarking``, ``6to4-relay``, ``multicast``,
``reserved``, ``broadcast``, ``unique-local``, ``site-local``, ``discard-only``, ``srv6-sid``,
``orchid``, ``nat64-local``, and for URLs ``scheme``, ``userinfo``, ``invalid-url``, ``invalid-host``.

Exemptions: networks in ``allow`` (``Settings.core.allow_private_cidrs``, development and tests
only; production refuses it) are allowed whatever rule would match. An IPv4-mapped or
IPv4-compatible address is exempt when its embedded IPv4 address is (it is the same host).

Every process of one deployment must enforce the same exemptions, or which dispatcher claims a delivery
decides whether it may reach a private address: ``policy_fingerprint`` names a policy, each dispatcher
records it in its heartbeat row and ``/api/whk/monitoring/health`` compares them.

Pure code: no I/O, no DNS.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Final
from urllib.parse import urlsplit

from whk.errors import WhkError

__all__ = [
    "HTTP_SCHEMES",
    "MAX_URL_LENGTH",
    "QUEUE_SCHEMES",
    "Address",
    "Network",
    "UrlPolicyError",
    "check_address",
    "check_url",
    "embedded_ipv4",
    "ensure_url",
    "parse_ip_literal",
    "policy_fingerprint",
]

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


class UrlPolicyError(WhkError):
    """A destination is refused by the SSRF policy; ``rule`` names the rule that matched."""

    def __init__(self, message: str, *, rule: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.rule = rule


def _v4(*rules: tuple[str, str]) -> tuple[tuple[IPv4Network, str], ...]:
    return tuple((IPv4Network(cidr), name) for cidr, name in rules)


def _v6(*rules: tuple[str, str]) -> tuple[tuple[IPv6Network, str], ...]:
    return tuple((IPv6Network(cidr), name) for cidr, name in rules)


# Cloud metadata endpoints get their own rule name (checked before the ranges that contain them):
# AWS/GCP/Azure/OpenStack 169.254.169.254, AWS ECS task metadata 169.254.170.2, Oracle Cloud
# 192.0.0.192, Alibaba Cloud 100.100.100.200, AWS IMDS over IPv6 fd00:ec2::254.
_METADATA_ADDRESSES: Final[frozenset[Address]] = frozenset(
    {
        IPv4Address("169.254.169.254"),
        IPv4Address("169.254.170.2"),
        IPv4Address("192.0.0.192"),
        IPv4Address("100.100.100.200"),
        IPv6Address("fd00:ec2::254"),
    }
)

# Order matters only for naming: the first match wins (broadcast before reserved 240/4).
_V4_DENY: Final = _v4(
    ("0.0.0.0/8", "unspecified"),  # "this network"; 0.0.0.0 reaches the local host on Linux
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared-address-space"),  # carrier-grade NAT, RFC 6598
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "ietf-protocol"),  # includes 192.0.0.192 (Oracle metadata), DS-Lite, NAT64 discovery
    ("192.0.2.0/24", "documentation"),  # TEST-NET-1
    ("192.88.99.0/24", "6to4-relay"),  # deprecated 6to4 relay anycast, RFC 7526
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),  # TEST-NET-2
    ("203.0.113.0/24", "documentation"),  # TEST-NET-3
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
)

_V6_DENY: Final = _v6(
    ("::1/128", "loopback"),
    ("::/128", "unspecified"),
    ("100::/64", "discard-only"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),  # RFC 9637
    ("2001:2::/48", "benchmarking"),
    ("2001:10::/28", "orchid"),  # ORCHID (deprecated)
    ("2001:20::/28", "orchid"),  # ORCHIDv2: identifiers, not routable locators
    ("2001::/23", "ietf-protocol"),  # Teredo 2001::/32 included (its IPv4 parts are checked first)
    ("64:ff9b:1::/48", "nat64-local"),  # local-use NAT64 prefix, RFC 8215: translates into private networks
    ("5f00::/16", "srv6-sid"),  # SRv6 segment identifiers, RFC 9602
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),  # deprecated, still routed by some stacks
    ("ff00::/8", "multicast"),
)

_GLOBAL_UNICAST: Final = IPv6Network("2000::/3")
_IPV4_MAPPED: Final = IPv6Network("::ffff:0:0/96")
_IPV4_COMPATIBLE: Final = IPv6Network("::/96")
_NAT64: Final = IPv6Network("64:ff9b::/96")
_NAT64_LOCAL: Final = IPv6Network("64:ff9b:1::/48")
_SIX_TO_FOUR: Final = IPv6Network("2002::/16")
_TEREDO: Final = IPv6Network("2001::/32")

# Host names that reach instance metadata services without any DNS trickery.
_METADATA_HOSTS: Final[frozenset[str]] = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.internal",
        "metadata.tencentyun.com",
        "instance-data",
        "instance-data.ec2.internal",
    }
)

HTTP_SCHEMES: Final = frozenset({"http", "https"})
# Message-queue targets (docs/queues.md): a Redis stream or a RabbitMQ exchange. Their hosts pass the same
# policy; a broker login never rides in the URL (no userinfo): it is the webhook's encrypted credential.
QUEUE_SCHEMES: Final = frozenset({"redis", "rediss", "amqp", "amqps"})
_ALLOWED_SCHEMES: Final = HTTP_SCHEMES | QUEUE_SCHEMES
MAX_URL_LENGTH: Final = 2048
# One part of an inet_aton() literal: decimal, octal (leading 0) or hex (0x). glibc refuses a bare "0x".
_AT_PART: Final = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")
_NUMERIC_LABEL: Final = re.compile(r"(0[xX][0-9a-fA-F]*|[0-9]+)")
_LITERAL_CHARS: Final = re.compile(r"[0-9a-fA-FxX.]+")
# Whitespace (any Unicode), control characters and backslashes never belong in a webhook URL.
_BAD_URL_CHAR: Final = re.compile(r"[\s\x00-\x1f\x7f\\]")


def embedded_ipv4(addr: IPv6Address) -> tuple[IPv4Address, ...]:
    """IPv4 addresses an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo), else ()."""
    if addr in _IPV4_MAPPED or addr in _NAT64 or addr in _NAT64_LOCAL:
        # RFC 8215's local-use prefix may embed at other offsets; /96 embedding is the common one.
        return (IPv4Address(int(addr) & 0xFFFFFFFF),)
    if addr in _IPV4_COMPATIBLE and int(addr) > 1:
        return (IPv4Address(int(addr) & 0xFFFFFFFF),)
    if addr in _SIX_TO_FOUR:
        return (IPv4Address((int(addr) >> 80) & 0xFFFFFFFF),)
    if addr in _TEREDO:
        server = IPv4Address((int(addr) >> 64) & 0xFFFFFFFF)
        client = IPv4Address(~int(addr) & 0xFFFFFFFF)  # the client address is stored inverted
        return (server, client)
    return ()


def _strip_scope(addr: Address) -> Address:
    if isinstance(addr, IPv6Address) and addr.scope_id:
        return IPv6Address(int(addr))
    return addr


def _in_any(addr: Address, allow: Sequence[Network]) -> bool:
    return any(addr in net for net in allow)


def _check_v4(addr: IPv4Address) -> str | None:
    if addr in _METADATA_ADDRESSES:
        return "metadata"
    for net, rule in _V4_DENY:
        if addr in net:
            return rule
    return None


def _check_v6(addr: IPv6Address) -> str | None:
    if addr in _METADATA_ADDRESSES:
        return "metadata"
    for v4 in embedded_ipv4(addr):  # (:: and ::1 embed nothing: they are named by the IPv6 rules)
        rule = _check_v4(v4)
        if rule is not None:
            return rule
    for net, rule in _V6_DENY:
        if addr in net:
            return rule
    if addr in _IPV4_MAPPED or addr in _NAT64:
        return None  # the embedded IPv4 address passed: this is that host (or its NAT64 translation)
    if addr in _IPV4_COMPATIBLE:
        return "reserved"  # deprecated form (RFC 4291): nothing legitimate is reached through it
    if addr not in _GLOBAL_UNICAST:
        return "reserved"
    return None


def check_address(addr: Address, allow: Sequence[Network] = ()) -> str | None:
    """None if WHK may connect to ``addr``, else the name of the rule that refuses it."""
    addr = _strip_scope(addr)
    if _in_any(addr, allow):
        return None
    if isinstance(addr, IPv6Address) and (addr in _IPV4_MAPPED or addr in _IPV4_COMPATIBLE):
        inner = IPv4Address(int(addr) & 0xFFFFFFFF)
        if int(addr) > 1 and _in_any(inner, allow):
            return None
    if isinstance(addr, IPv4Address):
        return _check_v4(addr)
    return _check_v6(addr)


def _parse_inet_aton(host: str) -> IPv4Address | None:
    """IPv4 literal in any form inet_aton()/getaddrinfo() accepts: ``2130706433``, ``0x7f.1``,
    ``127.1``, ``0177.0.0.1``. None if ``host`` is not such a literal (or overflows)."""
    if not _LITERAL_CHARS.fullmatch(host):
        return None
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_AT_PART.fullmatch(p) for p in parts):
        return None
    values = []
    for p in parts:
        if p[:2].lower() == "0x":
            values.append(int(p[2:], 16))
        elif len(p) > 1 and p[0] == "0":
            values.append(int(p, 8))
        else:
            values.append(int(p))
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    value = last
    for i, v in enumerate(head):
        value |= v << (8 * (3 - i))
    return IPv4Address(value)


def parse_ip_literal(host: str) -> Address | None:
    """The address a URL host denotes literally (brackets optional for IPv6), or None for a name."""
    h = host.strip()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if ":" in h:
        try:
            return ipaddress.IPv6Address(h)
        except ValueError:
            return None
    return _parse_inet_aton(h.rstrip(".") if h.endswith(".") and h != "." else h)


def _ascii_host(host: str) -> str | None:
    """Lower-case ASCII form of a URL host (IDNA-mapped like the HTTP client does), None if invalid."""
    if host.isascii():
        return host.lower()
    try:
        # nameprep maps look-alikes to ASCII (fullwidth digits, U+3002 dots, circled letters), so
        # "\uff11\uff12\uff17.\uff10.\uff10.\uff11" is checked as the 127.0.0.1 it becomes.
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None


def _check_host(host: str, allow: Sequence[Network]) -> str | None:
    """Check a URL host (no brackets); names are only checked syntactically here."""
    name = _ascii_host(host)
    if not name or "%" in name:
        return "invalid-host"
    literal = parse_ip_literal(name)
    if literal is not None:
        return check_address(literal, allow)
    if ":" in name:
        return "invalid-host"
    name = name[:-1] if name.endswith(".") else name
    if name in _METADATA_HOSTS:
        return "metadata"
    if name == "localhost" or name.endswith(".localhost"):
        # RFC 6761: always the loopback interface; allowed only when 127.0.0.1 is exempt.
        return None if check_address(IPv4Address("127.0.0.1"), allow) is None else "loopback"
    labels = name.split(".")
    if any(not label for label in labels):
        return "invalid-host"
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        # An all-numeric top label that is no valid literal ("1.2.3.4.5", "256.1.1.1", "0x1g"):
        # no such DNS name exists, and resolvers read some of these as addresses.
        return "invalid-host"
    return None


def check_url(url: str, allow: Sequence[Network] = ()) -> str | None:
    """None if ``url`` is an acceptable webhook destination (before DNS), else the rule name.

    http/https or a queue scheme (``QUEUE_SCHEMES``), at most MAX_URL_LENGTH characters, no userinfo, a
    host present; literal IP hosts (every spelling) are checked with ``check_address``; metadata host
    names and ``localhost`` are refused. Host names are resolved and their addresses checked at connect
    time, by the dispatcher's sender.
    """
    if len(url) > MAX_URL_LENGTH or _BAD_URL_CHAR.search(url):
        return "invalid-url"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "invalid-url"
    if parts.scheme.lower() not in _ALLOWED_SCHEMES:
        return "scheme"
    if "@" in parts.netloc:
        return "userinfo"
    if port == 0:
        return "invalid-url"
    if "[" in parts.netloc or "]" in parts.netloc:
        match = re.fullmatch(r"\[([^\]]*)\](?::\d*)?", parts.netloc)
        literal = parse_ip_literal(match.group(1).split("%", 1)[0]) if match else None
        if not isinstance(literal, IPv6Address):
            return "invalid-host"
        return check_address(literal, allow)
    return _check_host(parts.hostname or "", allow)


def ensure_url(url: str, allow: Sequence[Network] = ()) -> None:
    """Raise ``UrlPolicyError`` when ``check_url`` refuses ``url``."""
    rule = check_url(url, allow)
    if rule is not None:
        raise UrlPolicyError(
            f"webhook URL refused by the SSRF policy ({rule})",
            rule=rule,
            hint="use a public http(s), redis(s) or amqp(s) URL without userinfo; private networks are "
            "exempt only via WHK_ALLOW_PRIVATE_CIDRS "
            "in development",
        )


def policy_fingerprint(allow: Sequence[Network] = ()) -> str:
    """A short stable name of the policy exempting ``allow`` (order and duplicates do not matter):
    ``none`` without exemptions, else ``cidrs-`` and 12 hex digits of a SHA-256 of the sorted list."""
    nets = sorted({str(n) for n in allow})
    if not nets:
        return "none"
    return "cidrs-" + hashlib.sha256(",".join(nets).encode("ascii")).hexdigest()[:12]
