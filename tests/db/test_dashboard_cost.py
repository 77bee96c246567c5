"""What a Prometheus scrape and the dashboard's overview read does not grow with the delivery history.

Two databases hold the same last hour (bench/dashboard.py's seed: 6,000 deliveries, their attempts and
events, a backlog, dead letters); one also has 30,000 older deliveries with their attempts and events.
The rows each read touches are counted by PostgreSQL itself (pg_stat_xact_user_tables: tuples read by
sequential scans and fetched through indexes, in the reading transaction; the outbox and the attempt log
are counted partition by partition). Counting the delivery table
(the scrape before) or bounding a window by clock_timestamp() (no index bound) reads the history and
fails here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import psycopg
import pytest

from api.dashboard.data import DashboardData
from api.monitoring.repository import MonitoringRepository
from bench.dashboard import RECENT, _fill, _seed
from tests.support.pg import PgServer
from whk.db import configure_json

pytestmark = [pytest.mark.db, pytest.mark.slow]

HISTORY = 30_000
BIG_TABLES = ("whk_03_entregas", "whk_03_entregas_tentativas", "outbox")


@pytest.fixture
def two_dbs(pg_server: PgServer, template_db: str) -> Iterator[tuple[str, str]]:
    names = [pg_server.create_database(template=template_db) for _ in range(2)]
    try:
        for name, size in zip(names, (RECENT, RECENT + HISTORY), strict=True):
            with psycopg.connect(pg_server.dsn(name), autocommit=True) as conn:
                _seed(conn)
                _fill(conn, size)
                # Statistics and visibility as production has them, not as autovacuum happens to have
                # left them: otherwise one database may be planned with seq scans, or without index-only
                # scans, and the counts compare plans rather than history.
                conn.execute("VACUUM ANALYZE")
        yield pg_server.dsn(names[0]), pg_server.dsn(names[1])
    finally:
        for name in names:
            pg_server.drop_database(name)


Reader = Callable[[psycopg.AsyncConnection[Any], int | None], Awaitable[object]]


async def rows_read(dsn: str, read: Reader, tenant: int | None) -> int:
    """Tuples of the big tables read by ``read`` in one transaction."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        configure_json(conn)
        async with conn.transaction():
            await read(conn, tenant)
            cur = await conn.execute(
                "SELECT coalesce(sum(coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)), 0) "
                "FROM pg_stat_xact_user_tables WHERE schemaname = 'whk' AND "
                "(relname = ANY (%s) OR relname LIKE 'outbox\\_%%' "
                "OR relname LIKE 'whk\\_03\\_entregas\\_tentativas\\_%%')",
                [list(BIG_TABLES)],
            )
            row = await cur.fetchone()
            assert row is not None
            return int(row[0])


async def scrape(conn: psycopg.AsyncConnection[Any], tenant: int | None) -> object:
    """Every query GET /api/whk/monitoring/metrics runs."""
    open_work, repo = DashboardData(), MonitoringRepository()
    await open_work.backlog(conn, tenant)
    await open_work.firing_alerts(conn, tenant)
    await repo.counts(conn, "webhook_status_counts", tenant)
    await repo.counts(conn, "breaker_counts", tenant)
    await repo.attempts(conn, tenant, 300)
    await repo.health(conn)
    return await repo.dispatchers(conn)


async def overview(conn: psycopg.AsyncConnection[Any], tenant: int | None) -> object:
    """Every query GET /dashboard/overview runs (an admin also gets the health panel)."""
    data = DashboardData()
    view = await data.overview(conn, tenant, "1h")
    await data.health(conn, 60.0)
    return view


async def webhook_list(conn: psycopg.AsyncConnection[Any], tenant: int | None) -> object:
    """The webhooks page: per webhook its backlog and 24 h success rate."""
    return await DashboardData().webhook_rows(conn, tenant, after_id=None, limit=100)


@pytest.mark.parametrize(
    "read", [scrape, overview, webhook_list], ids=["metrics scrape", "dashboard overview", "webhook list"]
)
async def test_rows_read_do_not_grow_with_history(two_dbs: tuple[str, str], read: Reader) -> None:
    small, big = two_dbs
    for tenant in (None, 1):
        base = await rows_read(small, read, tenant)
        grown = await rows_read(big, read, tenant)
        # Same last hour, 6x the rows in the tables: the reads may differ by index depth, not by history.
        assert grown <= base * 1.1 + 200, (tenant, base, grown)
