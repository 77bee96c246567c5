"""A Prometheus scrape and the dashboard's overview must not slow down as deliveries pile up.

One throwaway PostgreSQL, two migrated databases seeded alike except for their history: both hold the
same last hour of traffic (events, deliveries, attempts, a backlog, dead letters) and the same
consumers and webhooks; one has 10,000 deliveries in all, the other 1,000,000 (the rest spread over the
previous 60 days, each with its outbox event and its attempt — what a busy installation accumulates).
The real app (``api.app.create_app``, in process) answers

* ``GET /api/whk/monitoring/metrics`` (admin and tenant credentials), and
* ``GET /dashboard/overview`` (signed in through the login form, admin and tenant),

timed in both databases in interleaved rounds; each goal is the worst ratio of medians:

    GOAL metrics_scrape_1m_vs_10k measured=<1M median / 10k median> target=2.0 PASS|FAIL
    GOAL dashboard_overview_1m_vs_10k measured=<1M median / 10k median> target=2.0 PASS|FAIL
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import time
from typing import Any

import psycopg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.keys import create_api_key
from bench._data import move_finished_to_history
from bench.api import _wait_ready
from bench.goals import Goal, report
from tests.support.pg import migrate_database, start_server
from whk.settings import load_settings

CONSUMERS = 10
WEBHOOKS_PER_CONSUMER = 5
RECENT = 6_000  # deliveries in the last hour (100 a minute), the same in both databases
RECENT_PENDING = 300
TYPES = ("order.created", "order.updated", "order.shipped", "user.created", "product.updated")

# g in [start, stop]; recent rows (g <= RECENT) fall in the last hour, the others 2 to 60 days ago.
_FILL = """
WITH src AS (
    SELECT g, w.id AS webhook_id, w.consumer_id, (%(types)s::text[])[1 + g %% 5] AS event_type,
           CASE WHEN g <= %(recent)s THEN now() - make_interval(secs => g * 3600.0 / %(recent)s)
                ELSE now() - interval '2 days' - make_interval(secs => (g %% 4976640)) END AS ts,
           CASE WHEN g <= %(recent_pending)s THEN 'pending' WHEN g %% 10 = 0 THEN 'dead'
                ELSE 'delivered' END AS status
    FROM generate_series(%(start)s::bigint, %(stop)s::bigint) AS g
    JOIN whk.whk_01_webhooks w ON w.id = (SELECT min(id) FROM whk.whk_01_webhooks) + g %% %(hooks)s
), ev AS (
    INSERT INTO whk.outbox (event_type, operation, status, routed_at, created_at, data)
    SELECT event_type, 'EMIT', 'routed', ts, ts, '{}'::jsonb FROM src
)
INSERT INTO whk.delivery_queue (event_id, outbox_id, event_created_at, event_type, webhook_id, consumer_id,
                                 status, attempts, next_attempt_at, dead_at, dead_reason, delivered_at,
                                 last_attempt_at, created_at, updated_at)
SELECT gen_random_uuid(), g, ts, event_type, webhook_id, consumer_id, status,
       CASE WHEN status = 'pending' THEN 0 ELSE 1 END, ts,
       CASE WHEN status = 'dead' THEN ts + interval '1 second' END,
       CASE WHEN status = 'dead' THEN 'HTTP 500 (after 1 attempts)' END,
       CASE WHEN status = 'delivered' THEN ts + interval '40 milliseconds' END,
       CASE WHEN status <> 'pending' THEN ts END, ts, ts
FROM src
"""
_ATTEMPTS = """
INSERT INTO whk.whk_03_entregas_tentativas (delivery_id, webhook_id, attempt_no, started_at, duration_ms,
                                            request_method, request_url, response_status, outcome)
SELECT d.id, d.webhook_id, 1, d.created_at + interval '20 milliseconds', 20 + d.id %% 50, 'POST',
       'https://example.com/hook', CASE WHEN d.status = 'dead' THEN 500 ELSE 200 END,
       CASE WHEN d.status = 'dead' THEN 'retry' ELSE 'delivered' END
FROM whk.whk_03_entregas d
WHERE d.status <> 'pending' AND d.id BETWEEN %(lo)s AND %(hi)s
"""


def _seed(conn: psycopg.Connection[Any]) -> tuple[str, str]:
    """Consumers, webhooks and two API keys (admin, first consumer)."""
    conn.execute(
        "UPDATE whk.whk_05_configuracoes SET value = '100000000' WHERE key = 'rate_limit.api_per_minute'"
    )
    first = None
    for c in range(CONSUMERS):
        row = conn.execute(
            "INSERT INTO whk.whk_04_assinantes (name, api_rate_limit_per_minute) VALUES (%s, 100000000) "
            "RETURNING id",
            (f"bench-{c}",),
        ).fetchone()
        assert row is not None
        first = first or int(row[0])
        for w in range(WEBHOOKS_PER_CONSUMER):
            conn.execute(
                "INSERT INTO whk.whk_01_webhooks (consumer_id, name, url, event_types) "
                "VALUES (%s, %s, %s, %s)",
                (row[0], f"hook-{w}", "https://example.com/hook", ["*"]),
            )
    assert first is not None
    admin = create_api_key(conn, admin=True, consumer_id=None, name="bench admin")
    tenant = create_api_key(conn, admin=False, consumer_id=first, name="bench tenant")
    return admin, tenant


def _fill(conn: psycopg.Connection[Any], size: int) -> float:
    began = time.perf_counter()
    step = 100_000
    hooks = CONSUMERS * WEBHOOKS_PER_CONSUMER
    for lo in range(1, size + 1, step):
        hi = min(size, lo + step - 1)
        conn.execute(
            _FILL,
            {
                "types": list(TYPES),
                "start": lo,
                "stop": hi,
                "hooks": hooks,
                "recent": RECENT,
                "recent_pending": RECENT_PENDING,
            },
        )
    row = conn.execute("SELECT min(id), max(id) FROM whk.whk_03_entregas").fetchone()
    assert row is not None
    for lo in range(int(row[0]), int(row[1]) + 1, step):
        conn.execute(_ATTEMPTS, {"lo": lo, "hi": lo + step - 1})
    # The daily partitions of the outbox and the attempt log, as the worker's housekeeping keeps them (rows
    # are written before, so the call moves them out of the default partitions, as it would in production).
    conn.execute(
        "SELECT whk.create_partitions('whk.outbox', since => (SELECT min(created_at) FROM whk.outbox))"
    )
    conn.execute(
        "SELECT whk.create_partitions('whk.whk_03_entregas_tentativas', "
        "since => (SELECT min(started_at) FROM whk.whk_03_entregas_tentativas))"
    )
    move_finished_to_history(conn)
    # The KPI roll-up of the last day, as the operations worker keeps it (the webhook list reads it).
    conn.execute("SELECT whk.kpi_rollup(86400)")
    for table in ("whk_03_entregas_tentativas", "outbox", "kpi_webhook_minute"):
        conn.execute(f"VACUUM ANALYZE whk.{table}")
    return time.perf_counter() - began


async def _sign_in(c: AsyncTestClient[Litestar], key: str) -> None:
    page = await c.get("/dashboard/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token is not None, page.text
    r = await c.post(
        "/dashboard/login", data={"api_key": key, "login_token": token.group(1)}, follow_redirects=False
    )
    assert r.status_code == 303, r.text


async def _measure(
    dsns: list[str], keys: list[tuple[str, str]], rounds: int
) -> dict[str, tuple[float, float]]:
    """Median time of each request against the small (index 0) and large (1) database, interleaved."""
    apps = []
    for dsn in dsns:
        settings = load_settings({"WHK_DATABASE_URL": dsn, "WHK_ENV": "development"})
        apps.append(create_app(settings))
    out: dict[str, tuple[float, float]] = {}
    async with AsyncTestClient(apps[0]) as a0, AsyncTestClient(apps[1]) as a1:
        clients = (a0, a1)
        for who, idx in (("admin", 0), ("tenant", 1)):
            for i, c in enumerate(clients):
                c.cookies.clear()
                await _sign_in(c, keys[i][idx])
            requests: dict[str, tuple[str, dict[str, str]]] = {
                f"metrics_scrape {who}": (
                    "/api/whk/monitoring/metrics",
                    {"Authorization": f"Bearer {{key{idx}}}"},
                ),
                f"dashboard_overview {who}": ("/dashboard/overview", {}),
            }
            for name, (path, headers) in requests.items():
                samples: tuple[list[float], list[float]] = ([], [])
                for r in range(rounds + 3):
                    order = (0, 1) if r % 2 == 0 else (1, 0)
                    for i in order:
                        h = {k: v.replace(f"{{key{idx}}}", keys[i][idx]) for k, v in headers.items()}
                        t0 = time.perf_counter()
                        resp = await clients[i].get(path, headers=h)
                        took = time.perf_counter() - t0
                        assert resp.status_code == 200, (name, resp.status_code, resp.text[:300])
                        if r >= 3:  # the first rounds warm caches and prepared statements
                            samples[i].append(took)
                out[name] = (statistics.median(samples[0]), statistics.median(samples[1]))
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench dashboard")
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    if args.small < RECENT:
        parser.error(f"--small must hold the shared last hour ({RECENT:,} deliveries)")

    server = start_server()
    try:
        _wait_ready(server.dsn())
        dsns, keys = [], []
        for size, name in ((args.small, "bench_dash_small"), (args.large, "bench_dash_large")):
            dsn = server.dsn(server.create_database(name))
            migrate_database(dsn)
            with psycopg.connect(dsn, autocommit=True) as conn:
                keys.append(_seed(conn))
                took = _fill(conn, size)
            print(f"bench dashboard: {size:,} deliveries in {took:.1f}s", flush=True)
            dsns.append(dsn)
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("CHECKPOINT")  # no flush of the bulk load while timing
        results = asyncio.run(_measure(dsns, keys, args.rounds))
    finally:
        server.stop()

    worst = {"metrics_scrape": 0.0, "dashboard_overview": 0.0}
    for key, (base, big) in results.items():
        ratio = big / base
        group = key.split(" ")[0]
        worst[group] = max(worst[group], ratio)
        print(
            f"bench dashboard: {key:<28} 10k {base * 1000:7.2f} ms   1M {big * 1000:7.2f} ms   x{ratio:.2f}"
        )
    return report(
        Goal("metrics_scrape_1m_vs_10k", worst["metrics_scrape"], 2.0, higher_is_better=False),
        Goal("dashboard_overview_1m_vs_10k", worst["dashboard_overview"], 2.0, higher_is_better=False),
    )
