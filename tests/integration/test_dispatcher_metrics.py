"""The dispatcher's own /metrics: served on WHK_DISPATCHER_METRICS_PORT, parsed by prometheus_client's
parser, and after N known deliveries (plus M failed attempts) the counters and histogram counts are N."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.metrics import event_time
from tests.support.api_platform import free_port
from tests.support.delivery import emit, make_consumer, make_webhook
from tests.support.dispatch import compress_schedule, fast_settings, running
from tests.support.receiver import Receiver, Reply, receiver, wait_until

pytestmark = [pytest.mark.db]
__all__ = ["receiver"]

N = 7


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def delivered(conn: psycopg.Connection[Any], n: int, dead: int) -> bool:
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE status = 'delivered'), count(*) FILTER (WHERE status = 'dead') "
        "FROM whk.whk_03_entregas"
    ).fetchone()
    return row == (n, dead)


async def test_counters_and_histograms_count_known_deliveries(
    db_url: str, conn: psycopg.Connection[Any], receiver: Receiver
) -> None:
    port = free_port()
    settings = fast_settings(db_url, WHK_DISPATCHER_METRICS_PORT=str(port))
    compress_schedule(conn, [])  # a failure is final: one attempt per delivery
    receiver.on("/bad", default=Reply(status=500))
    acme = make_consumer(conn, "acme")
    good = make_webhook(conn, acme, receiver.url("/ok"), ["order.*"])
    bad = make_webhook(conn, acme, receiver.url("/bad"), ["invoice.*"])
    emit(conn, "order.created", count=N)
    emit(conn, "invoice.created", count=2)
    async with running(settings):
        assert await wait_until(lambda: delivered(conn, N, 2), 30)
        async with httpx.AsyncClient(trust_env=False) as http:
            r = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert r.status_code == 200
    m = samples(r.text)
    assert m[("whk_dispatcher_attempts_total", (("outcome", "delivered"), ("webhook_id", str(good))))] == N
    assert m[("whk_dispatcher_attempts_total", (("outcome", "retry"), ("webhook_id", str(bad))))] == 2
    assert m[("whk_dispatcher_attempt_duration_seconds_count", (("outcome", "delivered"),))] == N
    assert m[("whk_dispatcher_commit_to_delivery_seconds_count", ())] == N
    assert m[("whk_dispatcher_claimed_deliveries_total", ())] == N + 2
    assert m[("whk_dispatcher_recorded_deliveries_total", ())] == N + 2
    assert m[("whk_dispatcher_in_flight", ())] == 0
    assert m[("whk_dispatcher_rounds_total", ())] >= 1
    assert m[("whk_dispatcher_claim_duration_seconds_count", ())] == m[("whk_dispatcher_rounds_total", ())]
    # bounded labels: no series carries an event or delivery id
    assert not any(("event_id" in dict(labels)) or ("delivery_id" in dict(labels)) for _, labels in m)


async def test_metrics_are_off_by_default(db_url: str) -> None:
    assert fast_settings(db_url).dispatcher.metrics_port == 0


def test_event_time_reads_the_envelope_tail() -> None:
    body = (
        '{"data": {"timestamp": "1999-01-01T00:00:00Z"}, "type": "a.b", '
        '"timestamp": "2026-12-07T10:20:45.123456Z"}'
    )
    assert event_time(body) == pytest.approx(1796638845.123456)
    assert event_time('{"data": {}, "type": "a.b"}') is None
    assert event_time('{"timestamp": "not a time"}') is None


async def test_breaker_transitions_are_counted_per_webhook(
    db_url: str, conn: psycopg.Connection[Any], receiver: Receiver
) -> None:
    """A breaker that opens on the first failure, fails its first probe and closes on the second: three
    known transitions, each counted once, made inside whk.record_outcomes and reported by it."""
    port = free_port()
    settings = fast_settings(db_url, WHK_DISPATCHER_METRICS_PORT=str(port))
    compress_schedule(conn, [0.05] * 6)
    receiver.on("/flaky", Reply(status=500), Reply(status=500), default=Reply(status=200))
    acme = make_consumer(conn, "acme")
    hook = make_webhook(
        conn,
        acme,
        receiver.url("/flaky"),
        ["order.*"],
        breaker_config={"failure_threshold": 1, "open_s": 0.2},
    )
    steady = make_webhook(conn, acme, receiver.url("/ok"), ["order.*"])
    emit(conn, "order.created", count=1)
    async with running(settings):
        assert await wait_until(lambda: delivered(conn, 2, 0), 30)
        async with httpx.AsyncClient(trust_env=False) as http:
            r = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert len(receiver.to("/flaky")) == 3
    m = samples(r.text)
    moved = {
        (dict(labels)["webhook_id"], dict(labels)["from_state"], dict(labels)["to_state"]): value
        for (name, labels), value in m.items()
        if name == "whk_dispatcher_breaker_transitions_total"
    }
    h = str(hook)
    assert moved == {(h, "closed", "open"): 1, (h, "half_open", "open"): 1, (h, "half_open", "closed"): 1}
    assert not any(k[0] == str(steady) for k in moved)
