"""Response classification: every status family, error classes, Retry-After parsing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dispatcher.attempt import ERROR_CLASSES, AttemptResult
from dispatcher.classify import THROTTLE_STATUSES, Outcome, classify, is_failure, parse_retry_after


def result(
    status: int | None = 200,
    *,
    headers: list[tuple[str, str]] | None = None,
    error: str | None = None,
    detail: str | None = None,
    location: str | None = None,
) -> AttemptResult:
    return AttemptResult(
        status=status,
        headers=headers or [],
        body=b"",
        body_truncated=False,
        duration_ms=1.0,
        error_class=error,  # type: ignore[arg-type]
        error_detail=detail,
        location=location,
        remote_ip=None,
    )


@pytest.mark.parametrize("status", [200, 201, 204, 226, 299])
def test_2xx_delivered(status: int) -> None:
    for ack in (False, True):
        assert classify(result(status), require_ack=ack).kind == "delivered"


def test_202_awaits_ack_only_when_required() -> None:
    assert classify(result(202), require_ack=True).kind == "awaiting_ack"
    assert classify(result(202), require_ack=False).kind == "delivered"


def test_410_gone() -> None:
    outcome = classify(result(410), require_ack=False)
    assert outcome.kind == "gone"
    assert "410" in outcome.reason


@pytest.mark.parametrize("status", sorted(THROTTLE_STATUSES))
def test_throttle_statuses(status: int) -> None:
    outcome = classify(result(status), require_ack=False)
    assert outcome.kind == "throttle"
    assert outcome.retry_after_s is None


def test_throttle_set_is_exactly_the_documented_one() -> None:
    assert frozenset({429, 502, 503, 504}) == THROTTLE_STATUSES


@pytest.mark.parametrize("status", [300, 301, 302, 303, 304, 307, 308])
def test_3xx_is_a_failed_attempt_with_location(status: int) -> None:
    outcome = classify(result(status, location="http://169.254.169.254/"), require_ack=False)
    assert outcome.kind == "retry"
    assert "redirect to http://169.254.169.254/ not followed" in outcome.reason


def test_3xx_location_from_headers_and_long_location_is_cut() -> None:
    long = "https://x.example/" + "a" * 5000
    outcome = classify(result(301, headers=[("Location", long)]), require_ack=False)
    assert outcome.kind == "retry"
    assert len(outcome.reason) < 700
    assert classify(result(302), require_ack=False).reason == "http 302 redirect not followed"


@pytest.mark.parametrize(
    "status", [100, 101, 400, 401, 403, 404, 405, 408, 409, 413, 422, 500, 501, 505, 599, 600, 999]
)
def test_other_statuses_retry(status: int) -> None:
    outcome = classify(result(status), require_ack=False)
    assert outcome.kind == "retry"
    assert str(status) in outcome.reason


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("timeout", "throttle"),
        ("connect", "retry"),
        ("refused", "retry"),
        ("reset", "retry"),
        ("dns", "retry"),
        ("tls", "retry"),
        ("protocol", "retry"),
        ("too_large", "retry"),
        ("ssrf_blocked", "blocked"),
    ],
)
def test_error_classes_without_status(error: str, kind: str) -> None:
    outcome = classify(result(None, error=error, detail="boom"), require_ack=False)
    assert outcome.kind == kind
    assert outcome.reason == f"{error}: boom"


def test_every_error_class_is_covered() -> None:
    kinds = {classify(result(None, error=e), require_ack=False).kind for e in ERROR_CLASSES}
    assert kinds == {"retry", "throttle", "blocked"}


def test_no_status_and_no_error() -> None:
    assert classify(result(None), require_ack=False).kind == "retry"


def test_status_wins_over_a_body_error() -> None:
    outcome = classify(result(200, error="timeout", detail="body stalled"), require_ack=False)
    assert outcome.kind == "delivered"
    assert "timeout: body stalled" in outcome.reason
    assert classify(result(500, error="reset"), require_ack=False).kind == "retry"


class TestRetryAfter:
    def test_seconds(self) -> None:
        assert parse_retry_after("120") == 120
        assert parse_retry_after(" 0 ") == 0
        assert parse_retry_after("99999999999") == 365 * 86400

    @pytest.mark.parametrize("value", [None, "", "-5", "1.5", "soon", "12abc", "\uff11\uff12"])
    def test_unusable(self, value: str | None) -> None:
        assert parse_retry_after(value, now=0) is None

    def test_http_date_against_date_header(self) -> None:
        assert (
            parse_retry_after(
                "Wed, 21 Oct 2026 07:30:00 GMT", date_header="Wed, 21 Oct 2026 07:28:00 GMT", now=0
            )
            == 120
        )

    def test_http_date_against_now(self) -> None:
        now = datetime(2026, 10, 21, 7, 29, 0, tzinfo=UTC).timestamp()
        assert parse_retry_after("Wed, 21 Oct 2026 07:30:00 GMT", now=now) == 60
        assert parse_retry_after("Wed, 21 Oct 2026 07:30:00 GMT", date_header="garbage", now=now) == 60

    def test_http_date_in_the_past_is_zero(self) -> None:
        now = datetime(2026, 10, 21, 8, 0, 0, tzinfo=UTC).timestamp()
        assert parse_retry_after("Wed, 21 Oct 2026 07:30:00 GMT", now=now) == 0

    def test_http_date_without_reference_is_unusable(self) -> None:
        assert parse_retry_after("Wed, 21 Oct 2026 07:30:00 GMT") is None

    def test_obsolete_date_formats(self) -> None:
        ref = "Wed, 21 Oct 2026 07:28:00 GMT"
        assert parse_retry_after("Wednesday, 21-Oct-26 07:30:00 GMT", date_header=ref) == 120  # RFC 850
        assert parse_retry_after("Wed Oct 21 07:30:00 2026", date_header=ref) == 120  # asctime
        assert parse_retry_after("Wed Oct  21 07:30:00 2026", date_header=ref) == 120
        assert parse_retry_after("Wed, 21 Oct 2026 07:30:00 -0000", date_header=ref) == 120
        assert parse_retry_after("Wed, 21 Oct 2026 08:30:00 +0100", date_header=ref) == 120

    def test_classify_reads_retry_after(self) -> None:
        headers = [("Retry-After", "30"), ("Date", "Wed, 21 Oct 2026 07:28:00 GMT")]
        outcome = classify(result(429, headers=headers), require_ack=False)
        assert outcome.kind == "throttle"
        assert outcome.retry_after_s == 30
        assert "retry-after 30s" in outcome.reason

    def test_classify_date_with_now(self) -> None:
        now = datetime(2026, 10, 21, 7, 29, 0, tzinfo=UTC).timestamp()
        headers = [("retry-after", "Wed, 21 Oct 2026 07:30:00 GMT")]
        assert classify(result(503, headers=headers), require_ack=False, now=now).retry_after_s == 60

    def test_retry_after_ignored_outside_throttle(self) -> None:
        assert classify(result(500, headers=[("Retry-After", "30")]), require_ack=False).retry_after_s is None


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("retry", True),
        ("throttle", True),
        ("blocked", True),
        ("delivered", False),
        ("awaiting_ack", False),
        ("gone", None),
    ],
)
def test_is_failure(kind: str, expected: bool | None) -> None:
    assert is_failure(Outcome(kind=kind)) is expected  # type: ignore[arg-type]
