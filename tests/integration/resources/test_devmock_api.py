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

    listed = await client.get(f"{BASE}/orders/requests", headers=world.admin)
    assert listed.status_code == 200, listed.text
    items = listed.json()
    assert [i["body"] for i in items] == ["second", body]  # newest first
    assert items[1]["headers"]["webhook-id"] == "msg_1"
    assert [i["replied_status"] for i in items] == [503, 200]
    assert (await client.get(f"{BASE}/other/requests", headers=world.admin)).json() == []

    cleared = await client.delete(f"{BASE}/orders/requests", headers=world.admin)
    assert cleared.status_code == 204
    assert (await client.get(f"{BASE}/orders/requests", headers=world.admin)).json() == []


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

    listed = await client.get(f"{BASE}/masked/requests", headers=world.admin)
    assert listed.status_code == 200, listed.text
    answered = listed.json()[0]["headers"]
    assert {n: answered[n.lower()] for n in secrets} == dict.fromkeys(secrets, "***")
    assert "s3cr3t" not in listed.text


async def test_reading_a_mock_needs_an_admin(client: AsyncTestClient[Any], world: World):
    assert (await client.get(f"{BASE}/orders/requests")).status_code == 401
    assert (await client.get(f"{BASE}/orders/requests", headers=world.a.headers)).status_code == 403
    assert (await client.delete(f"{BASE}/orders/requests", headers=world.a.headers)).status_code == 403
    for method in ("GET", "PUT", "DELETE"):
        r = await client.request(method, f"{BASE}/orders/scenario", headers=world.a.headers, json={})
        assert r.status_code == 403, method


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
        for method in ("GET", "PUT", "PATCH", "DELETE"):
            r = await prod_client.request(method, f"{BASE}/orders", content=b"x")
            assert r.status_code == 404, method
        r = await prod_client.get(f"{BASE}/orders/requests", headers=world.admin)
        assert r.status_code == 404
        r = await prod_client.put(f"{BASE}/orders/scenario", headers=world.admin, json={"steps": [503]})
        assert r.status_code == 404


async def test_every_method_is_received(client: AsyncTestClient[Any], world: World):
    for method in ("PUT", "PATCH", "DELETE", "GET", "POST"):
        r = await client.request(method, f"{BASE}/methods", content=b"{}" if method != "GET" else None)
        assert r.status_code == 200, (method, r.text)
    listed = (await client.get(f"{BASE}/methods/requests", headers=world.admin)).json()
    assert [i["method"] for i in listed] == ["POST", "GET", "DELETE", "PATCH", "PUT"]


async def test_a_scenario_is_played_in_order(client: AsyncTestClient[Any], world: World):
    scenario = {"steps": [503, 503, {"status": 200, "delay_ms": 10}], "then": 202}
    r = await client.put(f"{BASE}/retry/scenario", json=scenario, headers=world.admin)
    assert r.status_code == 200, r.text
    assert r.json()["served"] == 0
    acks = [await client.post(f"{BASE}/retry", content=b"{}") for _ in range(4)]
    assert [a.status_code for a in acks] == [503, 503, 200, 202]
    assert [a.json()["request_number"] for a in acks] == [0, 1, 2, 3]
    got = (await client.get(f"{BASE}/retry/scenario", headers=world.admin)).json()
    assert got["served"] == 4
    assert got["scenario"]["steps"] == [503, 503, {"status": 200, "delay_ms": 10, "drip_ms": 0}]
    listed = (await client.get(f"{BASE}/retry/requests", headers=world.admin)).json()
    assert [i["replied_status"] for i in listed] == [202, 200, 503, 503]

    # setting it again restarts the count; deleting it gives ?status back
    await client.put(f"{BASE}/retry/scenario", json=scenario, headers=world.admin)
    assert (await client.post(f"{BASE}/retry?status=201", content=b"{}")).status_code == 503
    assert (await client.delete(f"{BASE}/retry/scenario", headers=world.admin)).status_code == 204
    assert (await client.post(f"{BASE}/retry?status=201", content=b"{}")).status_code == 201
    assert (await client.get(f"{BASE}/retry/scenario", headers=world.admin)).status_code == 404


async def test_random_failures_are_the_plugins(client: AsyncTestClient[Any], world: World):
    from whk.mockscenario import Scenario, reply_for

    body = {"fail_rate": 0.3, "fail_status": 500, "seed": 5}
    assert (await client.put(f"{BASE}/flaky/scenario", json=body, headers=world.admin)).status_code == 200
    statuses = [(await client.post(f"{BASE}/flaky", content=b"{}")).status_code for _ in range(30)]
    assert statuses == [reply_for(Scenario(**body), n).status for n in range(30)]  # type: ignore[arg-type]
    assert {200, 500} == set(statuses)


async def test_a_dripped_body_arrives_whole(client: AsyncTestClient[Any], world: World):
    body = {"then": {"status": 200, "drip_ms": 100}}
    assert (await client.put(f"{BASE}/slow/scenario", json=body, headers=world.admin)).status_code == 200
    r = await client.post(f"{BASE}/slow", content=b"{}")
    assert r.status_code == 200
    assert r.json()["mock"] == "slow" and r.json()["request_number"] == 0


async def test_a_scenario_is_shared_by_every_api_worker(settings: Settings, world: World):
    """Two app instances (two workers) on one database play one script."""
    async with (
        AsyncTestClient(app=create_app(settings)) as one,
        AsyncTestClient(app=create_app(settings)) as two,
    ):
        r = await one.put(f"{BASE}/shared/scenario", json={"steps": [503, 503, 200]}, headers=world.admin)
        assert r.status_code == 200
        statuses = [(await c.post(f"{BASE}/shared", content=b"{}")).status_code for c in (two, one, two)]
    assert statuses == [503, 503, 200]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"steps": [200] * 101}, "steps"),
        ({"steps": [{"status": 200, "delay_ms": 30001}]}, "delay_ms"),
        ({"then": {"status": 200, "drip_ms": -1}}, "drip_ms"),
        ({"fail_rate": 1.5}, "fail_rate"),
        ({"fail_rate": -0.5}, "fail_rate"),
        ({"steps": [199]}, "steps"),
        ({"fail_status": 600}, "fail_status"),
        ({"seed": -1}, "seed"),
        ({"bogus": 1}, "bogus"),
    ],
)
async def test_scenario_bounds_are_problem_json(
    refusing_client: AsyncTestClient[Any], refusing_world: World, body: Any, field: str
):
    r = await refusing_client.put(f"{BASE}/bounds/scenario", json=body, headers=refusing_world.admin)
    assert r.status_code in (400, 422), r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert field in r.text


@pytest.mark.parametrize(
    "assignment",
    [
        "step_status = '{503,199}', step_delay_ms = '{0,0}', step_drip_ms = '{0,0}'",
        "step_status = '{503}', step_delay_ms = '{30001}', step_drip_ms = '{0}'",
        "step_status = '{503}', step_delay_ms = '{0}', step_drip_ms = '{-1}'",
        "step_status = '{503}', step_delay_ms = '{0,0}', step_drip_ms = '{0}'",
        "step_status = '{503,NULL}', step_delay_ms = '{0,0}', step_drip_ms = '{0,0}'",
        "step_status = (SELECT array_agg(503) FROM generate_series(1, 101)), "
        "step_delay_ms = (SELECT array_agg(0) FROM generate_series(1, 101)), "
        "step_drip_ms = (SELECT array_agg(0) FROM generate_series(1, 101))",
        "fail_rate = 1.01",
        "fail_rate = -0.01",
        "then_delay_ms = 30001",
        "then_status = 600",
        "seed = -1",
    ],
)
async def test_scenario_bounds_are_sql_checks(conn: psycopg.Connection[Any], assignment: str):
    conn.execute("INSERT INTO whk.mock_scenarios (mock_name) VALUES ('checked')")
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(f"UPDATE whk.mock_scenarios SET {assignment} WHERE mock_name = 'checked'")


async def test_each_request_says_whether_its_signature_verified(client: AsyncTestClient[Any], world: World):
    from whk.signing import generate_secret
    from whk.testing import sign_request

    r = await client.post(
        "/api/whk/webhooks",
        json={
            "consumer_id": world.a.consumer_id,
            "name": "to the mock",
            "url": "http://127.0.0.1:9/api/whk/dev/mock/signed?status=200",
            "event_types": ["order.created"],
        },
        headers=world.admin,
    )
    assert r.status_code == 201, r.text
    webhook_id, secret = r.json()["webhook"]["id"], r.json()["signing_secret"]
    payload = {"type": "order.created", "data": {"id": 1}}
    cases = [
        sign_request(payload, secret),
        sign_request(payload, generate_secret()),
        sign_request(payload, secret, timestamp=int(__import__("time").time()) - 3600),
    ]
    for signed in cases:
        await client.post(f"{BASE}/signed", content=signed.body, headers=dict(signed.headers))
    await client.post(f"{BASE}/signed", content=b"{}")  # unsigned
    signed = sign_request(payload, secret)
    await client.post(f"{BASE}/untargeted", content=signed.body, headers=dict(signed.headers))

    listed = (await client.get(f"{BASE}/signed/requests", headers=world.admin)).json()[::-1]
    assert [(i["webhook_id"], i["signature_ok"]) for i in listed] == [(webhook_id, True)] + [
        (webhook_id, False)
    ] * 3
    assert listed[0]["signature_reason"] is None
    assert "no_match" in listed[1]["signature_reason"]
    assert "timestamp_too_old" in listed[2]["signature_reason"]
    assert listed[3]["signature_reason"].startswith("unsigned")
    other = (await client.get(f"{BASE}/untargeted/requests", headers=world.admin)).json()
    assert other[0]["signature_ok"] is None and other[0]["webhook_id"] is None
    assert "no webhook targets this mock" in other[0]["signature_reason"]


async def test_tailing_reads_what_came_after_an_id(client: AsyncTestClient[Any], world: World):
    ids = [(await client.post(f"{BASE}/tail", content=str(i).encode())).json()["received"] for i in range(3)]
    after = (await client.get(f"{BASE}/tail/requests?after={ids[0]}", headers=world.admin)).json()
    assert [i["id"] for i in after] == ids[1:]  # oldest first
    assert (await client.get(f"{BASE}/tail/requests?after={ids[2]}", headers=world.admin)).json() == []
    r = await client.get(f"{BASE}/tail/requests?after=-1", headers=world.admin)
    assert r.status_code in (400, 422)


def _set(conn: psycopg.Connection[Any], key: str, value: Any) -> None:
    conn.execute(
        "UPDATE whk.whk_05_configuracoes SET value = %s::jsonb WHERE key = %s", (json.dumps(value), key)
    )


async def test_the_mock_table_is_bounded_by_settings(conn: psycopg.Connection[Any]):
    _set(conn, "dev.mock_keep_per_name", 3)
    for i in range(5):
        conn.execute("SELECT whk.mock_record('few', 'POST', '{}', %s, 1, 200)", (str(i),))
    assert conn.execute(
        "SELECT array_agg(body ORDER BY id) FROM whk.mock_requests WHERE mock_name = 'few'"
    ).fetchone() == (["2", "3", "4"],)
    # retention: nothing older than dev.mock_retention_hours survives the next record, whatever its mock
    _set(conn, "dev.mock_retention_hours", 1)
    conn.execute(
        "UPDATE whk.mock_requests SET received_at = now() - interval '2 hours' WHERE mock_name = 'few'"
    )
    conn.execute("SELECT whk.mock_record('other', 'POST', '{}', 'x', 1, 200)")
    assert conn.execute("SELECT count(*) FROM whk.mock_requests WHERE mock_name = 'few'").fetchone() == (0,)
    # the overall cap, across mock names
    _set(conn, "dev.mock_keep_per_name", 10000)
    _set(conn, "dev.mock_max_rows", 1000)
    conn.execute(
        "SELECT whk.mock_record('m' || (i % 50), 'POST', '{}', i::text, 1, 200) "
        "FROM generate_series(1, 1010) i"
    )
    assert conn.execute(
        "SELECT count(*), min(body::int) FROM whk.mock_requests WHERE body ~ '^[0-9]+$'"
    ).fetchone() == (
        1000,
        11,
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("dev.mock_keep_per_name", 0),
        ("dev.mock_keep_per_name", 10001),
        ("dev.mock_keep_per_name", 2.5),
        ("dev.mock_max_rows", 999),
        ("dev.mock_max_rows", 1000001),
        ("dev.mock_retention_hours", 0),
        ("dev.mock_retention_hours", 721),
    ],
)
async def test_the_mock_settings_are_bounded(conn: psycopg.Connection[Any], key: str, value: Any):
    with pytest.raises(psycopg.errors.CheckViolation, match=key):
        _set(conn, key, value)


async def test_each_receive_method_has_its_own_operation_id(client: AsyncTestClient[Any]):
    doc = (await client.get("/schema/openapi.json")).json()
    item = doc["paths"]["/api/whk/dev/mock/{name}"]
    assert {
        m: op["operationId"] for m, op in item.items() if isinstance(op, dict) and "operationId" in op
    } == {m: f"mock_receive_{m}" for m in ("get", "post", "put", "patch", "delete")}
