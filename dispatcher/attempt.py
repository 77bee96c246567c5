"""Value objects of one HTTP attempt, shared by the sender (I/O) and the pure decision code.

``OutboundRequest`` is what the engine asks the sender to send; ``AttemptResult`` is what came back
(or why nothing did). Both are plain msgspec Structs so they can be logged, stored and compared.
Kept apart from ``dispatcher.sender`` so ``classify``/``retry`` import no network code.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

__all__ = ["ERROR_CLASSES", "AttemptResult", "ErrorClass", "OutboundRequest"]

ErrorClass = Literal[
    "timeout", "connect", "refused", "reset", "ssrf_blocked", "tls", "dns", "too_large", "protocol"
]
ERROR_CLASSES: Final[frozenset[str]] = frozenset(
    {"timeout", "connect", "refused", "reset", "ssrf_blocked", "tls", "dns", "too_large", "protocol"}
)


class OutboundRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One HTTP attempt to make: the sender adds nothing but its User-Agent default."""

    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes
    deadline_s: float  # one overall deadline: resolve + connect + TLS + send + headers + capped body
    # Response bytes kept ('delivery.response_body_max_bytes'); None: the sender's default.
    max_body_bytes: int | None = None


class AttemptResult(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The outcome of one attempt as observed on the wire.

    ``status`` is None when no response status line arrived. ``error_class`` is None for a complete
    exchange; it can be set *together with* a status when the response broke off or stalled after
    its headers (the status is still what the receiver answered). ``body`` holds at most the
    sender's cap (default 20,000 bytes); ``body_truncated`` says more was sent (and not read).
    ``location`` is the Location header of a 3xx (never followed). ``remote_ip`` is the peer
    address connected to, or the address refused by the SSRF guard.
    """

    status: int | None
    headers: list[tuple[str, str]]
    body: bytes
    body_truncated: bool
    duration_ms: float
    error_class: ErrorClass | None
    error_detail: str | None
    location: str | None
    remote_ip: str | None
    headers_truncated: bool = False  # more response headers than the sender keeps (16 KB)

    def header(self, name: str) -> str | None:
        """The first response header called ``name`` (case-insensitive), or None."""
        low = name.lower()
        for key, value in self.headers:
            if key.lower() == low:
                return value
        return None
