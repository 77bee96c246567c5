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


async def test_mock_stores_credential_headers_masked(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    """Credentials are masked before they are stored (the attempt log's rule, whk.redact): not in the
    table (what pg_dump shows), not in the API's answer; the Standard Webhooks headers stay readable."""
    # A webhook whose outbound credential travels in a header with an innocuous name.
    conn.execute(
        "INSERT INTO whk.whk_01_webhooks (consumer_id, name, url, event_types, auth_type, auth_header_name) "
        "VALUES (%s, 'partner', 'http://127.0.0.1:9/hook', '{order.created}', 'api_key', 'X-Partner')",
        (world.a.consumer_id,),
    )
    secrets = {
        "Authorization": "Bearer s3cr3t-bearer",
        "Cookie": "session=s3cr3t-cookie",
        "X-Api-Key": "s3cr3t-apikey",
        "X-Acme-Token": "s3cr3t-custom",
        "X-Partner": "s3cr3t-partner",
    }
    plain = {"webhook-id": "msg_1", "webhook-signature": "v1,c2ln", "x-tenant": "acme"}
    r = await client.post(f"{BASE}/masked", content=b"{}", headers={**secrets, **plain})
    assert r.status_code == 200, r.text

    stored = conn.execute(
        "SELECT headers, headers::text FROM whk.mock_requests WHERE mock_name = 'masked'"
    ).fetchall()
    assert len(stored) == 1
    headers, text = stored[0]
    for name in secrets:
        assert headers[name.lower()] == "***", (name, headers)
    assert "s3cr3t" not in text
    for name, value in plain.items():
        assert headers[name] == value

    listed = await client.get(f"{BASE}/masked", headers=world.admin)
    assert listed.status_code == 200, listed.text
    answered = listed.json()[0]["headers"]
    assert {n: answered[n.lower()] for n in secrets} == dict.fromkeys(secrets, "***")
    assert "s3cr3t" not in listed.text


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
