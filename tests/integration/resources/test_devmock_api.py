"""Development mock endpoints: store what arrives, answer the asked status, admin reads, 404 in production."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from tests.support.resources import World
from whk.settings import Settings, load_settings

pytestmark = pytest.mark.db

BASE = "/api/whk/dev/mock"


async def test_mock_stores_requests_and_answers_the_asked_status(client: AsyncTestClient[Any], world: World):
    body = json.dumps({"type": "order.created", "data": {"id": 7}})
    r = await client.post(f"{BASE}/orders", content=body, headers={"webhook-id": "msg_1"})
    assert r.status_code == 200, r.text
    assert r.json()["mock"] == "orders"
    r = await client.post(f"{BASE}/orders?status=503", content=b"second")
    assert r.status_code == 503

    listed = await client.get(f"{BASE}/orders", headers=world.admin)
    assert listed.status_code == 200, listed.text
    items = listed.json()
    assert [i["body"] for i in items] == ["second", body]  # newest first
    assert items[1]["headers"]["webhook-id"] == "msg_1"
    assert [i["replied_status"] for i in items] == [503, 200]
    assert (await client.get(f"{BASE}/other", headers=world.admin)).json() == []

    cleared = await client.delete(f"{BASE}/orders", headers=world.admin)
    assert cleared.status_code == 204
    assert (await client.get(f"{BASE}/orders", headers=world.admin)).json() == []


async def test_reading_a_mock_needs_an_admin(client: AsyncTestClient[Any], world: World):
    assert (await client.get(f"{BASE}/orders")).status_code == 401
    assert (await client.get(f"{BASE}/orders", headers=world.a.headers)).status_code == 403
    assert (await client.delete(f"{BASE}/orders", headers=world.a.headers)).status_code == 403


async def test_bad_mock_input_is_problem_json(client: AsyncTestClient[Any]):
    for url in (f"{BASE}/bad%20name", f"{BASE}/orders?status=42", f"{BASE}/orders?delay_ms=-1"):
        r = await client.post(url, content=b"x")
        assert r.status_code in (400, 422), (url, r.status_code)
        assert r.headers["content-type"].startswith("application/problem+json")


async def test_mock_keeps_the_newest_thousand(conn: psycopg.Connection[Any]):
    for i in range(1005):
        conn.execute("SELECT whk.mock_record('busy', 'POST', '{}', %s, 1, 200)", (str(i),))
    rows = conn.execute(
        "SELECT min(body::int), count(*) FROM whk.mock_requests WHERE mock_name = 'busy'"
    ).fetchone()
    assert rows == (5, 1000)


async def test_mock_routes_do_not_exist_in_production(settings: Settings, world: World):
    prod = load_settings(
        {
            "WHK_DATABASE_URL": settings.core.database_url or "",
            "WHK_ENV": "production",
            "WHK_SECRET_KEYS": "k1:" + "A" * 43 + "=",
            "WHK_API_DB_ROLE": "whk_app",
        }
    )
    async with AsyncTestClient(app=create_app(prod)) as prod_client:
        r = await prod_client.post(f"{BASE}/orders", content=b"x")
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/problem+json")
        r = await prod_client.get(f"{BASE}/orders", headers=world.admin)
        assert r.status_code == 404
