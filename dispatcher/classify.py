"""Turn one attempt's result into a delivery outcome. Pure: no I/O, no clock.

=====================================  =============  ===============================================
result                                 kind           what the engine does
=====================================  =============  ===============================================
2xx                                    delivered      done (response recorded)
202 and the webhook requires acks      awaiting_ack   wait for the consumer's ack; ack timeout retries
410 Gone                               gone           disable the webhook (audited), park its backlog
429, 502, 503, 504, timeout            throttle       back off with a floor; ``Retry-After`` honoured
                                                      within a clamp (``retry.next_delay``)
other 1xx/3xx/4xx/5xx                  retry          failed attempt; 3xx records ``Location``, never
                                                      follows it (a redirect is how SSRF sneaks in)
refused, reset, connect, dns, tls,     retry          failed attempt
protocol, too_large
ssrf_blocked                           blocked        failed attempt without a request: no packet was
                                                      sent. The webhook is quarantined and the delivery
                                                      waits (no schedule step spent) until an operator
                                                      clears it; ``retry_blocked=False`` dead-letters
=====================================  =============  ===============================================

A status wins over an error class: a receiver that answered 200 and then stalled or broke off the
body has accepted the event (the error stays in ``reason``). ``Retry-After`` is read as seconds or
as an HTTP date; a date is measured against the response's own ``Date`` header (so clock skew
between us and the receiver cancels out), else against ``now`` when given.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final, Literal

import msgspec

from dispatcher.attempt import AttemptResult

__all__ = ["THROTTLE_STATUSES", "Outcome", "OutcomeKind", "classify", "is_failure", "parse_retry_after"]

OutcomeKind = Literal["delivered", "awaiting_ack", "retry", "throttle", "gone", "blocked"]
THROTTLE_STATUSES: Final[frozenset[int]] = frozenset({429, 502, 503, 504})
_MAX_LOCATION: Final = 512
# A Retry-After beyond a year is nonsense; keep the float finite and let RetryPolicy clamp it.
_MAX_RETRY_AFTER_S: Final = 365 * 86400.0
_FAILURE_KINDS: Final = frozenset({"retry", "throttle", "blocked"})
_SUCCESS_KINDS: Final = frozenset({"delivered", "awaiting_ack"})


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one attempt means for its delivery."""

    kind: OutcomeKind
    retry_after_s: float | None = None  # the receiver's Retry-After in seconds, unclamped
    reason: str = ""


def is_failure(outcome: Outcome) -> bool | None:
    """How an outcome counts for the circuit breaker and the failure streak (whk.record_outcomes):
    True a failure (retry, throttle, blocked), False a success (delivered, awaiting_ack), None neither
    (gone: the webhook is disabled on its own)."""
    if outcome.kind in _FAILURE_KINDS:
        return True
    if outcome.kind in _SUCCESS_KINDS:
        return False
    return None


def _http_date(value: str) -> datetime | None:
    """IMF-fixdate, RFC 850 or asctime (RFC 9110 5.6.7: recipients accept all three); GMT assumed."""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        try:
            parsed = datetime.strptime(" ".join(value.split()) + " +0000", "%a %b %d %H:%M:%S %Y %z")
        except ValueError:
            return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_retry_after(
    value: str | None, *, date_header: str | None = None, now: float | None = None
) -> float | None:
    """Seconds to wait according to a ``Retry-After`` value, or None if absent or unusable.

    ``120`` → 120.0; ``Wed, 21 Oct 2026 07:28:00 GMT`` → seconds after ``date_header`` (the
    response's Date) or, without one, after ``now`` (Unix seconds). Dates in the past give 0.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return min(float(int(text)), _MAX_RETRY_AFTER_S)
    when = _http_date(text)
    if when is None:
        return None
    reference: float | None = None
    if date_header is not None:
        ref = _http_date(date_header)
        if ref is not None:
            reference = ref.timestamp()
    if reference is None:
        reference = now
    if reference is None:
        return None
    return min(max(0.0, when.timestamp() - reference), _MAX_RETRY_AFTER_S)


def _error_reason(result: AttemptResult) -> str:
    detail = f": {result.error_detail}" if result.error_detail else ""
    return f"{result.error_class}{detail}"


def classify(result: AttemptResult, *, require_ack: bool, now: float | None = None) -> Outcome:
    """The outcome of ``result``; ``now`` (Unix seconds) only resolves a Retry-After date without Date."""
    status = result.status
    if status is None:
        if result.error_class == "ssrf_blocked":
            return Outcome(kind="blocked", reason=_error_reason(result))
        if result.error_class == "timeout":
            return Outcome(kind="throttle", reason=_error_reason(result))
        return Outcome(kind="retry", reason=_error_reason(result) if result.error_class else "no response")
    suffix = f" ({_error_reason(result)})" if result.error_class else ""
    if 200 <= status < 300:
        if status == 202 and require_ack:
            return Outcome(kind="awaiting_ack", reason=f"http 202, awaiting the consumer's ack{suffix}")
        return Outcome(kind="delivered", reason=f"http {status}{suffix}")
    if status == 410:
        return Outcome(kind="gone", reason=f"http 410 gone: the receiver asked to stop{suffix}")
    if status in THROTTLE_STATUSES:
        retry_after = parse_retry_after(
            result.header("retry-after"), date_header=result.header("date"), now=now
        )
        hint = f", retry-after {retry_after:g}s" if retry_after is not None else ""
        return Outcome(kind="throttle", retry_after_s=retry_after, reason=f"http {status}{hint}{suffix}")
    if 300 <= status < 400:
        location = result.location if result.location is not None else result.header("location")
        where = f" to {location[:_MAX_LOCATION]}" if location else ""
        return Outcome(kind="retry", reason=f"http {status} redirect{where} not followed{suffix}")
    return Outcome(kind="retry", reason=f"http {status}{suffix}")
