"""API list pages must not slow down as deliveries pile up (keyset pagination + tenant/filter indexes).

One throwaway PostgreSQL, one migrated database, the API's own repository code (the exact SQL a
``GET /api/whk/deliveries?...&limit=50`` runs). The same filtered pages are timed with 10,000 deliveries
in the table, then again after growing it to 1,000,000; the goal is the worst ratio of medians:

    GOAL deliveries_page_1m_vs_10k measured=<1M median / 10k median> target=2.0 PASS|FAIL

Pages timed (each the first page of 50 and the page after it, by cursor):
  tenant + status=dead, tenant + webhook + status=pending, admin + event_type, tenant unfiltered,
  tenant dead letters (/deliveries/failed).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from api.deliveries.repository import DeliveryRepository
from bench.goals import Goal, report
from tests.support.pg import migrate_database, start_server
from whk.db import configure_json

CONSUMERS = 4
WEBHOOKS_PER_CONSUMER = 2
TYPES = ("order.created", "order.updated", "order.shipped", "user.created", "product.updated")

_FILL = """
INSERT INTO whk.whk_03_entregas (event_id, outbox_id, event_created_at, event_type, webhook_id, consumer_id,
                                 status, attempts, dead_at, delivered_at, created_at, updated_at)
SELECT gen_random_uuid(), g, ts, (%(types)s::text[])[1 + g %% 5], w.id, w.consumer_id,
       CASE s.k WHEN 0 THEN 'dead' WHEN 1 THEN 'pending' ELSE 'delivered' END,
       1 + g %% 3,
       CASE WHEN s.k = 0 THEN ts END,
       CASE WHEN s.k > 1 THEN ts END,
       ts, ts
FROM generate_series(%(start)s::bigint, %(stop)s::bigint) AS g
CROSS JOIN LATERAL (SELECT now() - make_interval(secs => (%(stop)s - g) / 100.0) AS ts) t
-- one in ten dead, one in ten pending, the rest delivered, independent of the webhook
CROSS JOIN LATERAL (SELECT (g / %(hooks)s) %% 10 AS k) s
JOIN whk.whk_01_webhooks w ON w.id = (SELECT min(id) FROM whk.whk_01_webhooks) + g %% %(hooks)s
"""


def _seed(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """Consumers and webhooks; returns (a consumer id, one of its webhook ids)."""
    for c in range(CONSUMERS):
        row = conn.execute(
            "INSERT INTO whk.whk_04_assinantes (name) VALUES (%s) RETURNING id", (f"bench-{c}",)
        ).fetchone()
        assert row is not None
        for w in range(WEBHOOKS_PER_CONSUMER):
            conn.execute(
                "INSERT INTO whk.whk_01_webhooks (consumer_id, name, url, event_types) "
                "VALUES (%s, %s, %s, %s)",
                (row[0], f"hook-{w}", "https://example.com/hook", ["*"]),
            )
    row = conn.execute("SELECT consumer_id, id FROM whk.whk_01_webhooks ORDER BY id LIMIT 1").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _fill(conn: psycopg.Connection[Any], start: int, stop: int) -> float:
    began = time.perf_counter()
    step = 200_000
    for lo in range(start, stop + 1, step):
        hi = min(stop, lo + step - 1)
        conn.execute(
            _FILL, {"types": list(TYPES), "start": lo, "stop": hi, "hooks": CONSUMERS * WEBHOOKS_PER_CONSUMER}
        )
    conn.execute("VACUUM ANALYZE whk.whk_03_entregas")
    return time.perf_counter() - began


async def _time(fn: Callable[[], Awaitable[Any]], rounds: int) -> float:
    for _ in range(3):  # warm the cache and psycopg's prepared statements
        await fn()
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


async def _measure(dsn: str, consumer: int, webhook: int, rounds: int) -> dict[str, float]:
    repo = DeliveryRepository()
    out: dict[str, float] = {}
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        configure_json(conn)
        scenarios: dict[str, tuple[int | None, dict[str, Any], str, bool]] = {
            "tenant+status=dead": (consumer, {"status": ["dead"]}, "-id", False),
            "tenant+webhook+status=pending": (
                consumer,
                {"webhook_id": webhook, "status": ["pending"]},
                "-id",
                False,
            ),
            "admin+event_type": (None, {"event_type": "order.shipped"}, "-id", False),
            "tenant unfiltered": (consumer, {}, "-id", False),
            "tenant dead letters": (consumer, {}, "-dead_at", True),
        }
        for name, (tenant, filters, sort, failed) in scenarios.items():
            items, cursor = await repo.page(
                conn, tenant=tenant, filters=filters, sort=sort, cursor=None, limit=50, failed_only=failed
            )
            assert len(items) == 50, name
            assert cursor is not None, name

            async def first(
                t: int | None = tenant, f: dict[str, Any] = filters, s: str = sort, x: bool = failed
            ) -> None:
                await repo.page(conn, tenant=t, filters=f, sort=s, cursor=None, limit=50, failed_only=x)

            async def second(
                t: int | None = tenant,
                f: dict[str, Any] = filters,
                s: str = sort,
                x: bool = failed,
                c: str = cursor,
            ) -> None:
                await repo.page(conn, tenant=t, filters=f, sort=s, cursor=c, limit=50, failed_only=x)

            out[f"{name} page 1"] = await _time(first, rounds)
            out[f"{name} page 2"] = await _time(second, rounds)
    return out


def _wait_ready(dsn: str, timeout_s: float = 60.0) -> None:
    """The server may still be starting up right after pg_ctl returns: retry for a bounded time."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=5):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench api")
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args(argv)

    server = start_server()
    try:
        _wait_ready(server.dsn())
        name = server.create_database("bench_api")
        dsn = server.dsn(name)
        migrate_database(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            consumer, webhook = _seed(conn)
            took = _fill(conn, 1, args.small)
            print(f"bench api: {args.small:,} deliveries in {took:.1f}s", flush=True)
            small = asyncio.run(_measure(dsn, consumer, webhook, args.rounds))
            took = _fill(conn, args.small + 1, args.large)
            print(f"bench api: grown to {args.large:,} deliveries in {took:.1f}s", flush=True)
            large = asyncio.run(_measure(dsn, consumer, webhook, args.rounds))
    finally:
        server.stop()

    worst = 0.0
    for key, base in small.items():
        ratio = large[key] / base
        worst = max(worst, ratio)
        print(
            f"bench api: {key:<42} 10k {base * 1000:7.3f} ms   1M {large[key] * 1000:7.3f} ms   x{ratio:.2f}"
        )
    return report(Goal("deliveries_page_1m_vs_10k", worst, 2.0, higher_is_better=False))
