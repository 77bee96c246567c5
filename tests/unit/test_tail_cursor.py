"""whk tail's keyset cursor (holes wait, late rows show once, dead holes are skipped) and its filters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from whk_cli.tail import Cursor, Filters, format_line


def test_in_order_ids_move_the_cursor() -> None:
    c = Cursor(10)
    assert c.accept([11, 12, 13], now=0.0) == [11, 12, 13]
    assert c.position == 13
    assert c.accept([11, 13, 14], now=0.1) == [14]


def test_a_hole_holds_the_cursor_and_a_late_commit_is_shown_once() -> None:
    c = Cursor(10, gap_wait_s=2.0)
    # 11 is still committing: 12 and 13 are shown, the cursor stays below the hole.
    assert c.accept([12, 13], now=0.0) == [12, 13]
    assert c.position == 10
    # The next poll reads from 10 again: 12 and 13 are not shown twice; 11 arrives late and is shown.
    assert c.accept([12, 13], now=0.5) == []
    assert c.accept([11, 12, 13], now=1.0) == [11]
    assert c.position == 13


def test_a_hole_that_never_fills_is_skipped_after_the_wait() -> None:
    c = Cursor(10, gap_wait_s=2.0)
    assert c.accept([12], now=0.0) == [12]
    assert c.accept([12], now=1.9) == []
    assert c.position == 10
    assert c.accept([12], now=2.0) == []
    assert c.position == 12
    assert c.accept([13], now=2.1) == [13]
    assert c.position == 13


def _row(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 1,
        "started_at": datetime(2026, 12, 7, 13, 0, tzinfo=UTC),
        "webhook_id": 5,
        "delivery_id": 42,
        "deliveries": 1,
        "attempt_no": 2,
        "outcome": "throttle",
        "response_status": 503,
        "error_class": None,
        "duration_ms": 12.34,
        "dispatcher_id": "d1",
        "event_id": "0b8e",
        "event_type": "order.created",
        "delivery_status": "pending",
    }
    base.update(kw)
    return base


def test_filters() -> None:
    row = _row()
    assert Filters().match(row)
    assert Filters(webhooks=frozenset({5})).match(row)
    assert not Filters(webhooks=frozenset({6})).match(row)
    for status in ("throttle", "failed", "503", "5xx"):
        assert Filters(statuses=frozenset({status})).match(row), status
    for status in ("delivered", "200", "4xx"):
        assert not Filters(statuses=frozenset({status})).match(row), status
    assert Filters(event_types=("order.*",)).match(row)
    assert not Filters(event_types=("invoice.*",)).match(row)
    assert not Filters(statuses=frozenset({"5xx"})).match(_row(response_status=None, error_class="timeout"))


def test_format_line_shows_event_webhook_status_latency() -> None:
    line = format_line(_row())
    for part in ("throttle", "503", "12.3ms", "webhook 5", "delivery 42#2", "order.created", "0b8e"):
        assert part in line
    assert "timeout" in format_line(_row(response_status=None, error_class="timeout", duration_ms=None))
    assert "(+2 in batch)" in format_line(_row(deliveries=3))


def test_without_a_database_url_tail_reads_make_ups_private_server(tmp_path: Any) -> None:
    from whk.pgserver import PrivateServer
    from whk.settings import load_settings
    from whk_cli.tail import _tail_settings

    settings = load_settings({"WHK_DATA_DIR": str(tmp_path)})
    assert _tail_settings(settings).core.database_url is None  # nothing initialised there: the usual error
    (tmp_path / "pgdata").mkdir()
    (tmp_path / "pgdata" / "PG_VERSION").write_text("15\n")
    assert _tail_settings(settings).core.database_url == PrivateServer(tmp_path).dsn()
    given = load_settings({"WHK_DATA_DIR": str(tmp_path), "WHK_DATABASE_URL": "postgresql://x@/y"})
    assert _tail_settings(given).core.database_url == "postgresql://x@/y"
