"""The acceptance test of the integrator kit: a receiver that answers 503, 503, 200 gets three attempts of
one event from a real WHK (API + dispatcher, in this event loop), and the delivery ends delivered — asserted
with the pytest plugin (whk.testing), once on the plugin's own receiver playing the scenario, once on
WHK's development mock playing it."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from tests.support.api_platform import admin_key, make_consumer, real_server
from tests.support.dispatch import compress_schedule, fast_settings, running
from whk.testing import EventFactory, Receiver, mock_received, set_mock_scenario, wait_for_mock
from whk.testing.remote import connect_webhook

pytestmark = [pytest.mark.db, pytest.mark.e2e]

SCENARIO = [503, 503, 200]


def _delivery(conn: psycopg.Connection[Any], webhook_id: int) -> tuple[str, int, int]:
    row = conn.execute(
        "SELECT d.status, d.attempts, (SELECT count(*) FROM whk.whk_03_entregas_tentativas t "
        " WHERE t.delivery_id = d.id) FROM whk.whk_03_entregas d WHERE d.webhook_id = %s",
        (webhook_id,),
    ).fetchall()
    assert len(row) == 1, row
    return row[0][0], row[0][1], int(row[0][2])


async def test_retries_rehearsed_on_the_plugins_receiver(
    db_url: str, conn: psycopg.Connection[Any], whk_receiver: Receiver, whk_event_factory: EventFactory
):
    settings = fast_settings(db_url)
    compress_schedule(conn, [0.1, 0.1, 0.1, 0.1])
    key, consumer = admin_key(conn), make_consumer(conn, "integrator")
    event = whk_event_factory("order.created", new={"id": 42, "status": "new"})
    whk_receiver.play(SCENARIO)
    async with real_server(settings) as base, running(settings):
        hook = await asyncio.to_thread(
            whk_receiver.connect,
            base,
            key,
            path="orders",
            event_types=["order.created"],
            consumer_id=consumer,
        )
        conn.execute(
            "SELECT whk.emit('order.created', %s::jsonb)", (psycopg.types.json.Jsonb(event["data"]),)
        )
        received = await whk_receiver.wait_for_event_async(
            "order.created", where={"data.new.id": 42}, timeout=60
        )
        status, attempts, logged = await asyncio.to_thread(_wait_delivered, conn, hook.id)

    got = whk_receiver.received
    assert [r.replied_status for r in got] == SCENARIO
    assert len({r.msg_id for r in got}) == 1  # one event, retried: the same webhook-id three times
    got.assert_signed_by(hook.secret)
    assert all(r.verified for r in got)
    got.assert_event("order.created", where={"data.new.id": 42, "data.new.status": "new"}, count=3)
    got.assert_in_order(key="data.new.id")
    assert received.path == "/orders"
    assert (status, attempts, logged) == ("delivered", 3, 3)


async def test_retries_rehearsed_on_whks_mock(
    db_url: str, conn: psycopg.Connection[Any], whk_event_factory: EventFactory
):
    settings = fast_settings(db_url)
    compress_schedule(conn, [0.1, 0.1, 0.1, 0.1])
    key, consumer = admin_key(conn), make_consumer(conn, "integrator")
    event = whk_event_factory("order.created", new={"id": 7})
    async with real_server(settings) as base, running(settings):
        await asyncio.to_thread(set_mock_scenario, base, key, "rehearsal", SCENARIO)
        hook = await asyncio.to_thread(
            connect_webhook,
            base,
            key,
            f"{base}/api/whk/dev/mock/rehearsal",
            event_types=["order.created"],
            consumer_id=consumer,
        )
        conn.execute(
            "SELECT whk.emit('order.created', %s::jsonb)", (psycopg.types.json.Jsonb(event["data"]),)
        )
        got = await asyncio.to_thread(
            wait_for_mock, base, key, "rehearsal", lambda r: len(r.accepted()) >= 1, timeout=60
        )
        status, attempts, logged = await asyncio.to_thread(_wait_delivered, conn, hook.id)
        again = await asyncio.to_thread(mock_received, base, key, "rehearsal")

    assert [r.replied_status for r in got] == SCENARIO
    assert len(again) == 3  # nothing more arrived after the delivery succeeded
    got.assert_signed_by(hook.secret)  # by the plugin, from the recorded headers and body
    assert all(r.verified and r.reason is None for r in got)  # and by the mock itself
    got.assert_event("order.created", where={"data.new.id": 7}, count=3)
    assert (status, attempts, logged) == ("delivered", 3, 3)


def _wait_delivered(
    conn: psycopg.Connection[Any], webhook_id: int, timeout: float = 30
) -> tuple[str, int, int]:
    """The delivery's final state, waited for with a deadline (the outcome is recorded after the reply)."""
    import threading
    import time

    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        state = _delivery(conn, webhook_id)
        if state[0] == "delivered" or time.monotonic() >= deadline:
            return state
        pause.wait(0.1)


async def test_a_slow_mock_rehearses_timeouts_with_put(
    db_url: str, conn: psycopg.Connection[Any], whk_event_factory: EventFactory
):
    """A webhook configured with PUT and a 0.5 s timeout; the mock first answers after 3 s (the attempt
    times out without a status: retried), then answers 200 at once but drips its body over 3 s (the status
    counts: delivered, the slow body noted in the attempt log)."""
    settings = fast_settings(db_url)
    compress_schedule(conn, [0.1, 0.1, 0.1])
    key, consumer = admin_key(conn), make_consumer(conn, "integrator")
    event = whk_event_factory("order.created", new={"id": 3})
    async with real_server(settings) as base, running(settings):
        scenario = '{"steps": [{"status": 200, "delay_ms": 3000}, {"status": 200, "drip_ms": 3000}]}'
        await asyncio.to_thread(set_mock_scenario, base, key, "slow", scenario)
        hook = await asyncio.to_thread(
            connect_webhook,
            base,
            key,
            f"{base}/api/whk/dev/mock/slow",
            event_types=["order.created"],
            consumer_id=consumer,
            http_method="PUT",
            timeout_ms=500,
        )
        conn.execute(
            "SELECT whk.emit('order.created', %s::jsonb)", (psycopg.types.json.Jsonb(event["data"]),)
        )
        got = await asyncio.to_thread(wait_for_mock, base, key, "slow", lambda r: len(r) >= 2, timeout=60)
        status, attempts, logged = await asyncio.to_thread(_wait_delivered, conn, hook.id)

    assert [r.method for r in got] == ["PUT", "PUT"]
    assert len({r.msg_id for r in got}) == 1
    got.assert_signed_by(hook.secret)
    assert all(r.verified for r in got)
    log = conn.execute(
        "SELECT t.attempt_no, t.error_class, t.response_status FROM whk.whk_03_entregas_tentativas t "
        "WHERE t.webhook_id = %s ORDER BY t.attempt_no",
        (hook.id,),
    ).fetchall()
    assert log == [(1, "timeout", None), (2, "timeout", 200)], log
    assert (status, attempts, logged) == ("delivered", 2, 2)
