"""Queue benchmark: WHK delivering to a Redis stream against a bare pipelined ``XADD`` loop, same run.

Prints:
- ``GOAL redis_target_vs_raw_xadd``: immediate-mode events/s through `whk dispatcher` to a Redis stream
  target (committed backlog → entries in the stream, first to last arrival) ÷ a bare loop of pipelined
  ``XADD … MAXLEN ~`` (pipelines of ``CONCURRENCY`` 1 KB entries with the same five fields) to the same
  redis-server;
- ``INFO redis_batch_events_per_s``: the same with a batch-mode webhook (1,000 events per stream entry);
- ``INFO redis_immediate_cpu_us_per_event``: CPU per event of the dispatcher, PostgreSQL and redis-server;
- ``INFO immediate_floor``: PostgreSQL's CPU per event for only the writes the data model needs (as
  ``bench/deliver.py`` prints it): what the schema itself permits here, whatever the target.

Tune with BENCH_QUEUES_SECONDS (default 5: the raw loop's duration) and BENCH_QUEUES_EVENTS (default 10000:
the backlog WHK drains per phase).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import psycopg
import redis.asyncio as aioredis

from bench.deliver import CONCURRENCY, CpuSplit, _dispatcher, _floor, _seed_events, _stop
from bench.goals import Goal, report
from tests.support.brokers import RedisServer, redis_server
from tests.support.delivery import make_consumer, make_webhook
from tests.support.pg import PgServer, migrate_database, start_server

BODY = b'{"type":"bench.e","timestamp":"2026-01-01T00:00:00Z","data":{"pad":"' + b"x" * 950 + b'"}}'
FIELDS: dict[Any, Any] = {
    "webhook-id": "msg_0123456789abcdef0123456789abcdef",
    "webhook-timestamp": "1767225600",
    "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    "content-type": "application/json",
    "body": BODY,
}
MAXLEN = 1_000_000


async def raw_xadd(server: RedisServer, seconds: float) -> float:
    """Entries/s of a bare loop of pipelined XADDs (one connection, CONCURRENCY entries per pipeline)."""
    client = aioredis.Redis(host="127.0.0.1", port=server.port)
    try:
        sent = 0
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            async with client.pipeline(transaction=False) as pipe:
                for _ in range(CONCURRENCY):
                    pipe.xadd("raw", FIELDS, maxlen=MAXLEN, approximate=True)
                await pipe.execute()
            sent += CONCURRENCY
        return sent / (time.monotonic() - start)
    finally:
        await client.delete("raw")
        await client.aclose()


async def drain(
    pg: PgServer, server: RedisServer, dsn: str, count: Any, expected: int, limit_s: float
) -> tuple[float, str]:
    """Start a dispatcher; events/s from the first to the last arrival (``count()`` events arrived so far),
    and the CPU per event of the processes taking part after the first arrival."""
    proc = _dispatcher(dsn, WHK_LOG_LEVEL="WARNING")
    assert server.proc is not None
    split = CpuSplit(pg, {"dispatcher": proc.pid, "redis": server.proc.pid})
    first_at = last_at = 0.0
    counted_from = seen = 0
    try:
        deadline = time.monotonic() + limit_s
        while seen < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            now, seen = time.monotonic(), await count()
            if seen and not first_at:
                split.start()
                first_at, counted_from = now, seen
            if seen > counted_from:
                last_at = now
        split.stop()
    finally:
        _stop(proc)
    if seen < expected:
        print(f"  (only {seen} of {expected} arrived before the time limit)", flush=True)
    if last_at <= first_at:
        return 0.0, split.line(0)
    return (seen - counted_from) / (last_at - first_at), split.line(seen - counted_from)


async def _run(seconds: float, events: int) -> int:
    pg = start_server()
    try:
        template = pg.create_database("bench_template")
        migrate_database(pg.dsn(template))
        with redis_server() as server:
            client = aioredis.Redis(host="127.0.0.1", port=server.port)
            raw = await raw_xadd(server, seconds)
            print(f"baseline pipelined XADD: {raw:.0f} entries/s (pipelines of {CONCURRENCY})", flush=True)

            dsn = pg.dsn(pg.create_database(template=template))
            with psycopg.connect(dsn, autocommit=True) as conn:
                consumer = make_consumer(conn, "bench")
                make_webhook(
                    conn,
                    consumer,
                    server.url("whk", maxlen=MAXLEN),
                    ["imm.*"],
                    max_in_flight=CONCURRENCY,
                )
            _seed_events(dsn, "imm.e", events)

            async def stream_length() -> int:
                return int(await client.xlen("whk"))

            immediate, cpu = await drain(pg, server, dsn, stream_length, events, 60 + events / 200)
            print(f"immediate: {immediate:.0f} events/s ({events} events)", flush=True)
            print(f"INFO redis_immediate_cpu_us_per_event {cpu}", flush=True)
            with psycopg.connect(dsn, autocommit=True) as conn:
                tried = conn.execute(
                    "SELECT outcome, coalesce(error_class, '-'), count(*) "
                    "FROM whk.whk_03_entregas_tentativas GROUP BY 1, 2 ORDER BY 3 DESC"
                ).fetchall()
            print(
                "INFO redis_immediate_attempts " + " ".join(f"{o}/{e}={n}" for o, e, n in tried), flush=True
            )

            batch_dsn = pg.dsn(pg.create_database(template=template))
            with psycopg.connect(batch_dsn, autocommit=True) as conn:
                consumer = make_consumer(conn, "bench")
                hook = make_webhook(
                    conn,
                    consumer,
                    server.url("whk-batch", maxlen=MAXLEN),
                    ["bat.*"],
                    delivery_mode="batch",
                    batch_size=1000,
                    batch_window_ms=50,
                )
            _seed_events(batch_dsn, "bat.e", events)
            with psycopg.connect(batch_dsn, autocommit=True) as watch:

                async def delivered() -> int:
                    row = watch.execute(
                        "SELECT count(*) FROM whk.whk_03_entregas "
                        "WHERE webhook_id = %s AND status = 'delivered'",
                        [hook],
                    ).fetchone()
                    return int(row[0]) if row else 0

                batch, _ = await drain(pg, server, batch_dsn, delivered, events, 60 + events / 1000)
            print(f"INFO redis_batch_events_per_s {batch:.0f} (1,000 events per stream entry)", flush=True)
            await client.aclose()

            floor_dsn = pg.dsn(pg.create_database(template=template))
            with psycopg.connect(floor_dsn, autocommit=True) as conn:
                consumer = make_consumer(conn, "floor")
                webhook = make_webhook(conn, consumer, server.url("floor"), ["floor.*"])
            cpu_us = _floor(pg, floor_dsn, webhook, consumer, 20_000, 1)
            cores = os.cpu_count() or 1
            print(
                f"INFO immediate_floor postgres_cpu_us_per_event={cpu_us:.0f} "
                f"ceiling_events_per_s={cores * 1e6 / cpu_us:.0f} (cores={cores}; the writes the data model "
                "needs per event, set-based, nothing else: the ceiling if PostgreSQL had every core)",
                flush=True,
            )
        return report(Goal("redis_target_vs_raw_xadd", immediate / raw if raw else 0.0, 0.5))
    finally:
        pg.stop()


def main(argv: list[str]) -> int:
    del argv
    seconds = float(os.environ.get("BENCH_QUEUES_SECONDS", "5"))
    events = int(os.environ.get("BENCH_QUEUES_EVENTS", "10000"))
    return asyncio.run(_run(seconds, events))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
