"""Alert evaluation must not slow down as deliveries pile up in the window (KPI views over the minute
roll-up, index-driven state views).

One throwaway PostgreSQL, two migrated databases seeded alike with deliveries and one attempt each spread
over the last hour (10,000 and 1,000,000), 100 rules over every metric (per webhook, per consumer, global;
windows of 5 minutes and 1 hour; SLO burn rates). The worker's own code evaluates them
(``Evaluator.evaluate_rules``: one transaction reading every rule's value from the KPI views and writing
the state machine's outcome), timed in both databases in interleaved rounds:

    GOAL alert_eval_1m_vs_10k measured=<1M median / 10k median> target=2.0 PASS|FAIL

The roll-up that precedes each evaluation (``whk.kpi_rollup``, the last WHK_KPI_ROLLUP_HORIZON_S of the
attempt log) follows the recent traffic rate, not the window: it is printed as an INFO line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import psycopg

from bench._data import move_finished_to_history
from bench.goals import Goal, report
from ops.alerting.evaluate import Evaluator
from tests.support.pg import migrate_database, start_server
from whk.db import configure_json

CONSUMERS = 4
WEBHOOKS_PER_CONSUMER = 2
RULES = 100

_DELIVERIES = """
INSERT INTO whk.delivery_queue (event_id, outbox_id, event_created_at, event_type, webhook_id, consumer_id,
                                 status, attempts, dead_at, delivered_at, next_attempt_at, created_at,
                                 updated_at)
SELECT gen_random_uuid(), g, ts, 'order.created', w.id, w.consumer_id,
       CASE s.k WHEN 0 THEN 'dead' WHEN 1 THEN 'pending' ELSE 'delivered' END, 1,
       CASE WHEN s.k = 0 THEN ts END, CASE WHEN s.k > 1 THEN ts END, ts, ts, ts
FROM generate_series(%(start)s::bigint, %(stop)s::bigint) AS g
-- spread evenly over the last hour, newest last
CROSS JOIN LATERAL (SELECT now() - make_interval(secs => 3600.0 * (%(total)s - g) / %(total)s) AS ts) t
CROSS JOIN LATERAL (SELECT (g / %(hooks)s) %% 10 AS k) s
JOIN whk.whk_01_webhooks w ON w.id = (SELECT min(id) FROM whk.whk_01_webhooks) + g %% %(hooks)s
"""

_ATTEMPTS = """
INSERT INTO whk.whk_03_entregas_tentativas (delivery_id, webhook_id, attempt_no, started_at, duration_ms,
                                            request_method, request_url, response_status, outcome)
SELECT d.id, d.webhook_id, 1, d.created_at, 5 + (d.id %% 400), 'POST', 'https://example.com/hook',
       CASE WHEN d.status = 'delivered' THEN 200 ELSE 500 END,
       CASE WHEN d.status = 'delivered' THEN 'delivered' ELSE 'retry' END
FROM whk.whk_03_entregas d
WHERE d.id BETWEEN %(start)s AND %(stop)s
"""


def _seed(conn: psycopg.Connection[Any]) -> None:
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
    conn.execute("INSERT INTO whk.webhook_runtime (webhook_id) SELECT id FROM whk.whk_01_webhooks")
    conn.execute(
        "INSERT INTO whk.slos (consumer_id, webhook_id, name, objective) "
        "SELECT consumer_id, id, 'slo ' || id, 0.99 FROM whk.whk_01_webhooks"
    )


def _rules(conn: psycopg.Connection[Any]) -> None:
    hooks = conn.execute("SELECT id, consumer_id FROM whk.whk_01_webhooks ORDER BY id").fetchall()
    slos = [r[0] for r in conn.execute("SELECT id FROM whk.slos ORDER BY id").fetchall()]
    metrics = [
        ("failure_rate", ">", 0.5),
        ("retry_rate", ">", 0.5),
        ("dead_letters", ">", 1e9),
        ("latency_p95_ms", ">", 1e9),
        ("consecutive_failures", ">", 10),
        ("pending_age_s", ">", 1e9),
        ("breaker_open_s", ">", 600),
        ("webhooks_disabled", ">", 0),
        ("unrouted_age_s", ">", 300),
        ("live_dispatchers", "<", 0),
        ("slo_burn_rate", ">=", 1e9),
    ]
    conn.execute("DELETE FROM whk.whk_06_alertas")
    for i in range(RULES):
        metric, op, threshold = metrics[i % len(metrics)]
        hook, consumer = hooks[i % len(hooks)]
        scope = i % 3  # webhook, consumer, global
        cond: dict[str, Any] = {
            "metric": metric,
            "operator": op,
            "threshold": threshold,
            "window_s": 300 if i % 2 else 3600,
        }
        owner = None
        if metric == "slo_burn_rate":
            cond.update(slo_id=slos[i % len(slos)], long_window_s=3600, short_window_s=300)
        elif scope == 0:
            cond["webhook_id"] = hook
        elif scope == 1:
            owner = consumer
        conn.execute(
            "INSERT INTO whk.whk_06_alertas (consumer_id, name, condition, for_s) VALUES (%s, %s, %s, 600)",
            (owner, f"rule {i}", json.dumps(cond)),
        )


def _fill(conn: psycopg.Connection[Any], total: int) -> float:
    began = time.perf_counter()
    step = 200_000
    hooks = CONSUMERS * WEBHOOKS_PER_CONSUMER
    for lo in range(1, total + 1, step):
        hi = min(total, lo + step - 1)
        conn.execute(_DELIVERIES, {"start": lo, "stop": hi, "total": total, "hooks": hooks})
    first = conn.execute("SELECT min(id) FROM whk.whk_03_entregas").fetchone()
    assert first is not None
    for lo in range(first[0], first[0] + total, step):
        conn.execute(_ATTEMPTS, {"start": lo, "stop": lo + step - 1})
    move_finished_to_history(conn)
    conn.execute("VACUUM ANALYZE whk.whk_03_entregas_tentativas")
    return time.perf_counter() - began


async def _measure(dsns: list[str], rounds: int) -> tuple[dict[str, tuple[float, float]], list[int]]:
    ev = Evaluator(lease_s=60, rollup_horizon_s=300)
    conns = [await psycopg.AsyncConnection.connect(d, autocommit=True) for d in dsns]
    try:
        for c in conns:
            configure_json(c)
        # Build the roll-up of the whole hour once (what an hour of 15-second runs leaves behind).
        full = Evaluator(lease_s=60, rollup_horizon_s=3660)
        for c in conns:
            await full.rollup(c)
            await c.execute("VACUUM ANALYZE whk.kpi_webhook_minute")
        samples: dict[str, tuple[list[float], list[float]]] = {"rules": ([], []), "rollup": ([], [])}
        counted: list[int] = []
        for r in range(rounds + 3):
            order = (0, 1) if r % 2 == 0 else (1, 0)
            for i in order:
                t0 = time.perf_counter()
                rep = await ev.evaluate_rules(conns[i])
                t1 = time.perf_counter()
                await ev.rollup(conns[i])
                t2 = time.perf_counter()
                if r >= 3:  # the first rounds warm caches and plans
                    samples["rules"][i].append(t1 - t0)
                    samples["rollup"][i].append(t2 - t1)
                    counted.append(rep.rules)
        out = {k: (statistics.median(v[0]), statistics.median(v[1])) for k, v in samples.items()}
        return out, counted
    finally:
        for c in conns:
            await c.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench alerts")
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)

    server = start_server()
    try:
        dsns = []
        for size, name in ((args.small, "bench_alerts_small"), (args.large, "bench_alerts_large")):
            dsn = server.dsn(server.create_database(name))
            migrate_database(dsn)
            with psycopg.connect(dsn, autocommit=True) as conn:
                _seed(conn)
                took = _fill(conn, size)
                _rules(conn)
            print(f"bench alerts: {size:,} deliveries and attempts in the last hour, seeded in {took:.1f}s")
            dsns.append(dsn)
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        results, counted = asyncio.run(_measure(dsns, args.rounds))
    finally:
        server.stop()
    assert set(counted) == {RULES}, counted
    (small_rules, large_rules) = results["rules"]
    (small_roll, large_roll) = results["rollup"]
    sizes = f"{args.small:,} {{:7.2f}} ms   {args.large:,} {{:7.2f}} ms"
    print(
        f"bench alerts: evaluation of {RULES} rules  "
        + sizes.format(small_rules * 1000, large_rules * 1000)
        + f"   x{large_rules / small_rules:.2f}"
    )
    print(
        "bench alerts: INFO roll-up of the last 5 minutes  "
        + sizes.format(small_roll * 1000, large_roll * 1000)
        + " (follows the attempts per minute, not the window)"
    )
    return report(Goal("alert_eval_1m_vs_10k", large_rules / small_rules, 2.0, higher_is_better=False))
