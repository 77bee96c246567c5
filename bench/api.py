"""API list pages must not slow down as deliveries pile up (keyset pagination + tenant/filter indexes).

One throwaway PostgreSQL, two migrated databases seeded alike (10,000 and 1,000,000 deliveries), the
API's own repository code (the exact SQL a ``GET /api/whk/deliveries?...&limit=50`` runs). The same
filtered pages are timed in both databases in interleaved rounds; the goal is the worst ratio of medians:

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
from typing import Any

import psycopg

from api.deliveries.repository import DeliveryRepository
from bench._data import move_finished_to_history
from bench.goals import Goal, report
from tests.support.pg import migrate_database, start_server
from whk.db import configure_json

CONSUMERS = 4
WEBHOOKS_PER_CONSUMER = 2
TYPES = ("order.created", "order.updated", "order.shipped", "user.created", "product.updated")

_FILL = """
INSERT INTO whk.delivery_queue (event_id, outbox_id, event_created_at, event_type, webhook_id, consumer_id,
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
    move_finished_to_history(conn)
    return time.perf_counter() - began


Scenario = tuple[int | None, dict[str, Any], str, bool]


def _scenarios(consumer: int, webhook: int) -> dict[str, Scenario]:
    return {
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


async def _page(
    repo: DeliveryRepository, conn: psycopg.AsyncConnection[Any], sc: Scenario, cursor: str | None
) -> tuple[int, str | None]:
    tenant, filters, sort, failed = sc
    listing = repo.dead_letters if failed else repo.listing
    items, nxt = await listing.page(conn, tenant=tenant, filters=filters, sort=sort, cursor=cursor, limit=50)
    return len(items), nxt


async def _measure(
    small_dsn: str, large_dsn: str, consumer: int, webhook: int, rounds: int
) -> dict[str, tuple[float, float]]:
    """Median time of each page in both databases, measured in interleaved rounds (A B, B A, ...) so
    that whatever else the machine does at the moment weighs on both sides alike."""
    repo = DeliveryRepository()
    out: dict[str, tuple[float, float]] = {}
    async with (
        await psycopg.AsyncConnection.connect(small_dsn, autocommit=True) as small,
        await psycopg.AsyncConnection.connect(large_dsn, autocommit=True) as large,
    ):
        configure_json(small)
        configure_json(large)
        for name, sc in _scenarios(consumer, webhook).items():
            cursors: dict[int, str | None] = {}
            for i, conn in enumerate((small, large)):
                n, cursors[i] = await _page(repo, conn, sc, None)
                assert n == 50, name
                assert cursors[i] is not None, name
            for label, use_cursor in (("page 1", False), ("page 2", True)):
                samples: tuple[list[float], list[float]] = ([], [])
                for r in range(rounds + 3):
                    order = (0, 1) if r % 2 == 0 else (1, 0)
                    for i in order:
                        conn = (small, large)[i]
                        t0 = time.perf_counter()
                        await _page(repo, conn, sc, cursors[i] if use_cursor else None)
                        if r >= 3:  # the first rounds warm caches and prepared statements
                            samples[i].append(time.perf_counter() - t0)
                out[f"{name} {label}"] = (statistics.median(samples[0]), statistics.median(samples[1]))
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
        dsns = []
        for size, name in ((args.large, "bench_api_large"), (args.small, "bench_api_small")):
            dsn = server.dsn(server.create_database(name))
            migrate_database(dsn)
            with psycopg.connect(dsn, autocommit=True) as conn:
                consumer, webhook = _seed(conn)
                took = _fill(conn, 1, size)
            print(f"bench api: {size:,} deliveries in {took:.1f}s", flush=True)
            dsns.append(dsn)
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("CHECKPOINT")  # no flush of the bulk load while timing
        results = asyncio.run(_measure(dsns[1], dsns[0], consumer, webhook, args.rounds))
    finally:
        server.stop()

    worst = 0.0
    for key, (base, big) in results.items():
        ratio = big / base
        worst = max(worst, ratio)
        print(f"bench api: {key:<38} 10k {base * 1000:7.3f} ms   1M {big * 1000:7.3f} ms   x{ratio:.2f}")
    return report(Goal("deliveries_page_1m_vs_10k", worst, 2.0, higher_is_better=False))
