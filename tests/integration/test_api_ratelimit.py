"""Per-consumer API rate limit, state in PostgreSQL (shared by every API process)."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from tests.support.api_platform import PROBLEM, bearer, consumer_key, make_consumer

pytestmark = pytest.mark.db


async def test_two_consumers_at_once_two_app_processes(settings, conn):
    """Two app instances (separate pools, like two API processes) share each consumer's budget; one
    consumer exhausting its limit does not touch the other's."""
    a = make_consumer(conn, "a", api_rate_limit_per_minute=5)
    b = make_consumer(conn, "b", api_rate_limit_per_minute=8)
    key_a, key_b = consumer_key(conn, a), consumer_key(conn, b)
    async with AsyncTestClient(create_app(settings)) as c1, AsyncTestClient(create_app(settings)) as c2:
        calls = [
            (c1 if i % 2 else c2).get("/api/whk/api-keys", headers=bearer(key))
            for i in range(12)
            for key in (key_a, key_b)
        ]
        responses = await asyncio.gather(*calls)
    by_key: dict[str, list] = {key_a: [], key_b: []}
    for i, r in enumerate(responses):
        by_key[key_a if i % 2 == 0 else key_b].append(r)
    for key, limit in ((key_a, 5), (key_b, 8)):
        statuses = [r.status_code for r in by_key[key]]
        assert statuses.count(200) == limit, statuses
        assert statuses.count(429) == 12 - limit, statuses
        for r in by_key[key]:
            assert r.headers["ratelimit-limit"] == str(limit)
            assert r.headers["ratelimit-policy"] == f"{limit};w=60"
            assert int(r.headers["ratelimit-remaining"]) >= 0
        denied = [r for r in by_key[key] if r.status_code == 429]
        for r in denied:
            assert r.headers["content-type"].startswith(PROBLEM)
            assert r.headers["ratelimit-remaining"] == "0"
            assert 1 <= int(r.headers["retry-after"]) <= 60
            assert r.json()["status"] == 429


async def test_remaining_counts_down(settings, conn):
    a = make_consumer(conn, "a", api_rate_limit_per_minute=3)
    key = consumer_key(conn, a)
    async with AsyncTestClient(create_app(settings)) as c:
        remaining = [(await c.get("/api/whk/api-keys", headers=bearer(key))).headers["ratelimit-remaining"]]
        remaining.append(
            (await c.get("/api/whk/api-keys", headers=bearer(key))).headers["ratelimit-remaining"]
        )
        remaining.append(
            (await c.get("/api/whk/api-keys", headers=bearer(key))).headers["ratelimit-remaining"]
        )
        last = await c.get("/api/whk/api-keys", headers=bearer(key))
    assert remaining == ["2", "1", "0"]
    assert last.status_code == 429


def test_gcra_refills_over_time(conn):
    """The SQL function with an injected clock: a burst of `limit`, then one request per window/limit."""
    t0 = datetime(2030, 1, 1, tzinfo=UTC)

    def hit(at):
        return conn.execute(
            "SELECT allowed, remaining, retry_after_s FROM whk.api_rate_limit_hit('s', 6, 60, %s)", (at,)
        ).fetchone()

    assert [hit(t0)[0] for _ in range(6)] == [True] * 6
    allowed, remaining, retry_after = hit(t0)
    assert (allowed, remaining) == (False, 0)
    assert retry_after == pytest.approx(10.0)
    assert hit(t0 + timedelta(seconds=9.9))[0] is False
    assert hit(t0 + timedelta(seconds=10))[0] is True
    assert hit(t0 + timedelta(seconds=10))[0] is False
    # A quiet minute refills the whole burst.
    assert [hit(t0 + timedelta(seconds=200))[0] for _ in range(7)] == [True] * 6 + [False]


def test_default_limit_comes_from_configuration(conn):
    conn.execute("UPDATE whk.whk_05_configuracoes SET value = '2' WHERE key = 'rate_limit.api_per_minute'")
    rows = [
        conn.execute("SELECT allowed, limit_count FROM whk.api_rate_limit_hit('d', NULL)").fetchone()
        for _ in range(3)
    ]
    assert rows == [(True, 2), (True, 2), (False, 2)]
