"""The textbook design beside WHK's hot path: one pgqueuer job per delivery, run as its own process.

``bench/deliver.py`` seeds ``count`` jobs with :func:`enqueue_jobs` (one per delivery, the 1 KB event as
the payload) and starts ``python -m bench.pgqueuer_relay DSN URL`` as it starts ``whk dispatcher``: a
pgqueuer worker over the asyncpg driver, batch dequeue, whose one entrypoint signs each job's body the way
WHK does (``whk.signing``, Standard Webhooks) and POSTs it with one aiohttp session whose pool is sized as
the dispatcher's. pgqueuer's own bookkeeping (the job row picked, then deleted into ``pgqueuer_log``) is the
job system's record of the delivery. It exits when the queue is drained (``QueueExecutionMode.drain``).

The GOAL ``deliver_vs_pgqueuer_relay`` is WHK's immediate drain ÷ this drain, on the same receiver in the
same run: the measured reason the hot path keeps its own per-endpoint ``SKIP LOCKED`` claim while every
job off the hot path runs on pgqueuer (docs/delivery.md). This relay does less than the dispatcher: no
routing, no per-endpoint fairness, breaker, rate limit or attempt log.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from datetime import timedelta

import aiohttp
import asyncpg
import uvloop
from pgqueuer import PgQueuer
from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver
from pgqueuer.adapters.persistence import qb
from pgqueuer.adapters.persistence.queries import Queries
from pgqueuer.domain.models import Job
from pgqueuer.domain.settings import DBSettings
from pgqueuer.domain.types import QueueExecutionMode

from whk.signing import decode_secret, signature_headers

ENTRYPOINT = "bench_deliver"
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CONCURRENCY = 64
BATCH = CONCURRENCY // 2


def _queries(connection: asyncpg.Connection) -> Queries:
    """pgqueuer's queries over WHK's own pgqueuer tables (schema ``whk``, installed by migration 0002)."""
    names = DBSettings(db_schema="whk")
    return Queries(
        AsyncpgDriver(connection),
        qbe=qb.QueryBuilderEnvironment(settings=names),
        qbq=qb.QueryQueueBuilder(settings=names),
        qbs=qb.QuerySchedulerBuilder(settings=names),
    )


async def enqueue_jobs(dsn: str, body: bytes, count: int) -> None:
    """``count`` queued jobs, one per delivery, enqueued in batches of 10,000 (pgqueuer's list form)."""
    connection = await asyncpg.connect(dsn)
    try:
        queries = _queries(connection)
        for start in range(0, count, 10_000):
            n = min(10_000, count - start)
            await queries.enqueue([ENTRYPOINT] * n, [body] * n, [0] * n)
    finally:
        await connection.close()


async def relay(dsn: str, url: str) -> None:
    """Drain every queued job: sign, POST, let pgqueuer record it done. Stops early on SIGTERM."""
    keys = [decode_secret(SECRET)]
    connection = await asyncpg.connect(dsn)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            pgq = PgQueuer(connection=AsyncpgDriver(connection), queries=_queries(connection))

            @pgq.entrypoint(ENTRYPOINT, concurrency_limit=CONCURRENCY)
            async def deliver(job: Job) -> None:
                body = job.payload or b""
                headers = dict(signature_headers(keys, f"msg_{job.id}", int(time.time()), body))
                headers["content-type"] = "application/json"
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status >= 300:
                        raise RuntimeError(f"receiver answered {resp.status}")

            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, pgq.shutdown.set)
            await pgq.run(
                batch_size=BATCH,
                max_concurrent_tasks=CONCURRENCY,
                mode=QueueExecutionMode.drain,
                dequeue_timeout=timedelta(seconds=1),
            )
    finally:
        await connection.close()


def main(argv: list[str]) -> int:
    dsn, url = argv
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(relay(dsn, url))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
