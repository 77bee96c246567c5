"""Delayed delivery, completed (issue 20), end to end: the real dispatcher (in-process) against real
PostgreSQL and a real receiver on 127.0.0.1; signatures verified with the `standardwebhooks` package."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from tests.support.delivery import TEST_SECRET, emit, make_consumer, make_webhook, statuses
from tests.support.dispatch import fast_settings, running
from tests.support.receiver import receiver, wait_until

pytestmark = [pytest.mark.db]
__all__ = ["receiver"]  # the fixture, imported

ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@pytest.mark.slow  # waits out a 2 s delay by design
async def test_ten_price_changes_in_the_delay_window_are_sent_once(db_url, conn, receiver):
    c = make_consumer(conn)
    hook = make_webhook(
        conn,
        c,
        receiver.url("/prices"),
        ["price.changed"],
        delivery_mode="delayed",
        delay_seconds=2,
        supersede_by_key=True,
    )
    async with running(fast_settings(db_url)):
        first = datetime.now(UTC)
        for price in range(10):  # each its own commit, routed as it comes
            emit(conn, "price.changed", {"price": price}, key="sku-1")
        assert await wait_until(lambda: statuses(conn, hook) == {"delivered": 1, "superseded": 9}, 15)
    (req,) = receiver.to("/prices")
    payload = Webhook(TEST_SECRET).verify(req.body, req.headers)
    assert payload["data"]["price"] == 9
    # Not postponed by the later changes: sent once the FIRST change's delay was over (give or take the
    # statement's clock), not 2 s after the last one.
    assert req.wall >= first.timestamp() + 2 - 0.5
    superseded_by = conn.execute(
        "SELECT DISTINCT superseded_by IS NOT NULL FROM whk.whk_03_entregas WHERE status = 'superseded'"
    ).fetchall()
    assert superseded_by == [(True,)]


@pytest.mark.slow  # the window ends at a minute boundary (quiet hours are HH:MM): up to ~70 s
async def test_quiet_hours_hold_then_release_at_the_window_end_while_urgent_goes_at_once(
    db_url, conn, receiver
):
    now = datetime.now(UTC)
    end = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    if (end - now).total_seconds() < 10:  # leave time to see the hold
        end += timedelta(minutes=1)
    start = end - timedelta(minutes=30)
    quiet = {
        "time_zone": "UTC",
        "windows": [{"days": ALL_DAYS, "start": f"{start:%H:%M}", "end": f"{end:%H:%M}"}],
    }
    c = make_consumer(conn)
    conn.execute("SELECT whk.set_consumer_quiet_hours(%s, %s::jsonb)", [c, json.dumps(quiet)])
    calm = make_webhook(conn, c, receiver.url("/calm"), ["stock.low"], name="calm")
    urgent = make_webhook(conn, c, receiver.url("/urgent"), ["stock.low"], name="pager", urgent=True)

    async with running(fast_settings(db_url)):
        emit(conn, "stock.low", {"sku": "A"})
        assert await wait_until(lambda: statuses(conn, urgent) == {"delivered": 1}, 10)
        assert statuses(conn, calm) == {"pending": 1}
        assert datetime.now(UTC) < end  # it was held by the window, not by chance
        assert await wait_until(
            lambda: statuses(conn, calm) == {"delivered": 1}, (end - now).total_seconds() + 15
        )
    (req,) = receiver.to("/calm")
    assert req.wall >= end.timestamp()
    Webhook(TEST_SECRET).verify(req.body, req.headers)
    row = conn.execute("SELECT attempts FROM whk.whk_03_entregas WHERE webhook_id = %s", [calm]).fetchone()
    assert row == (1,)  # waiting spent no attempt
