"""Webhook resource: CRUD, validation (SSRF rule, PostgreSQL's jsonpath message), secrets, tenancy, audit,
the simulator against a real receiver on 127.0.0.1, and the attempt log."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient
from standardwebhooks.webhooks import Webhook as SwVerifier

from tests.support.resources import Receiver, World, audit_count, make_batch, make_delivery, make_webhook

pytestmark = pytest.mark.db

BASE = "/api/whk/webhooks"


def _body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "orders", "url": "http://127.0.0.1:9/hook", "event_types": ["order.*"]}
    body.update(over)
    return body


async def test_create_read_update_delete(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    r = await client.post(BASE, json=_body(), headers=world.a.headers)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["signing_secret"].startswith("whsec_")
    assert created["key_id"].startswith("key_")
    hook = created["webhook"]
    assert hook["consumer_id"] == world.a.consumer_id
    hid = hook["id"]
    # the secret is stored encrypted, never in plaintext
    row = conn.execute("SELECT secret_enc FROM whk.webhook_secrets WHERE webhook_id = %s", (hid,)).fetchone()
    assert row is not None and b"whsec_" not in bytes(row[0])
    assert audit_count(conn, "webhook.create") == 1

    r = await client.get(f"{BASE}/{hid}", headers=world.a.headers)
    assert r.status_code == 200 and r.json()["name"] == "orders"
    assert "signing_secret" not in r.json()

    r = await client.put(
        f"{BASE}/{hid}", json={"name": "orders v2", "filter": "$.data.total > 100"}, headers=world.a.headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "orders v2"
    assert r.json()["filter"] == '($."data"."total" > 100)'
    assert audit_count(conn, "webhook.update") == 1

    r = await client.get(BASE, headers=world.a.headers)
    assert [h["id"] for h in r.json()["items"]] == [hid]

    r = await client.delete(f"{BASE}/{hid}", headers=world.a.headers)
    assert r.status_code == 204
    r = await client.get(f"{BASE}/{hid}", headers=world.a.headers)
    assert r.status_code == 404
    assert audit_count(conn, "webhook.delete") == 1


async def test_admin_must_name_the_consumer(client: AsyncTestClient[Any], world: World):
    r = await client.post(BASE, json=_body(), headers=world.admin)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["errors"][0]["pointer"] == "/consumer_id"
    r = await client.post(BASE, json=_body(consumer_id=world.b.consumer_id), headers=world.admin)
    assert r.status_code == 201 and r.json()["webhook"]["consumer_id"] == world.b.consumer_id
    # a consumer cannot create a webhook for another consumer: another tenant is invisible (404)
    r = await client.post(BASE, json=_body(consumer_id=world.b.consumer_id), headers=world.a.headers)
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://169.254.169.254/latest/meta-data", "metadata"),
        ("http://169.254.1.1/x", "link-local"),
        ("http://10.0.0.1/x", "private"),
        ("ftp://example.com/x", "scheme"),
        ("http://user:pw@example.com/x", "userinfo"),
    ],
)
async def test_url_refused_by_the_ssrf_policy_names_the_rule(
    refusing_client: AsyncTestClient[Any],
    refusing_world: World,
    refusing_conn: psycopg.Connection[Any],
    url: str,
    rule: str,
):
    r = await refusing_client.post(BASE, json=_body(url=url), headers=refusing_world.a.headers)
    if r.status_code == 400:  # msgspec refused the shape before the policy ran (too short etc.)
        pytest.fail(r.text)
    assert r.status_code == 422, r.text
    (err,) = [e for e in r.json()["errors"] if e["pointer"] == "/url"]
    assert rule in err["message"]
    assert refusing_conn.execute("SELECT count(*) FROM whk.whk_01_webhooks").fetchone() == (0,)


async def test_filter_syntax_error_carries_postgresql_message(client: AsyncTestClient[Any], world: World):
    r = await client.post(BASE, json=_body(filter="$.data.total >>> 3"), headers=world.a.headers)
    assert r.status_code == 422
    (err,) = r.json()["errors"]
    assert err["pointer"] == "/filter"
    assert "jsonpath" in err["message"]  # PostgreSQL: "syntax error at or near ... of jsonpath input"
    r = await client.post(BASE, json=_body(headers={"webhook-signature": "x"}), headers=world.a.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/headers/webhook-signature"


async def test_unknown_fields_and_bad_values_are_refused(client: AsyncTestClient[Any], world: World):
    r = await client.post(BASE, json=_body(surprise=1), headers=world.a.headers)
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/problem+json")
    r = await client.post(BASE, json=_body(event_types=["Order Created"]), headers=world.a.headers)
    assert r.status_code == 400


async def test_list_filters_sorts_and_keyset_pages(client: AsyncTestClient[Any], world: World):
    ids = []
    for i in range(5):
        r = await client.post(
            BASE,
            json=_body(
                name=f"hook-{i}",
                event_types=["order.*" if i % 2 else "user.created"],
                status="paused" if i == 4 else "active",
            ),
            headers=world.a.headers,
        )
        ids.append(r.json()["webhook"]["id"])
    await client.post(BASE, json=_body(name="other"), headers=world.b.headers)
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, "sort": "id"}
        if cursor:
            params["cursor"] = cursor
        r = await client.get(BASE, params=params, headers=world.a.headers)
        assert r.status_code == 200
        seen += [h["id"] for h in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == ids  # every row once, in order, only the tenant's own
    r = await client.get(BASE, params={"event_type": "user.created"}, headers=world.a.headers)
    assert [h["id"] for h in r.json()["items"]] == [ids[4], ids[2], ids[0]]
    r = await client.get(BASE, params={"status": "paused"}, headers=world.a.headers)
    assert [h["id"] for h in r.json()["items"]] == [ids[4]]
    r = await client.get(BASE, params={"sort": "name; DROP TABLE x"}, headers=world.a.headers)
    assert r.status_code == 400
    r = await client.get(
        BASE, params={"sort": "-name", "cursor": cursor or "bm90IGEgY3Vyc29y"}, headers=world.a.headers
    )
    # a cursor fits its documented pattern; one made for another sort is refused on its meaning
    assert r.status_code == 422
    assert r.json()["errors"] == [{"pointer": "/query/cursor", "message": r.json()["detail"]}]
    r = await client.get(BASE, params={"name_prefix": "%"}, headers=world.a.headers)
    assert r.json()["items"] == []  # LIKE wildcards in a prefix are literal


async def test_status_changes_go_through_the_delivery_functions(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    r = await client.post(BASE, json=_body(), headers=world.a.headers)
    hid = r.json()["webhook"]["id"]
    d = make_delivery(conn, hid, status="pending")
    r = await client.put(f"{BASE}/{hid}", json={"status": "disabled"}, headers=world.a.headers)
    assert r.json()["status"] == "disabled"
    assert conn.execute("SELECT status FROM whk.whk_03_entregas WHERE id = %s", (d,)).fetchone() == (
        "parked",
    )
    r = await client.put(f"{BASE}/{hid}", json={"status": "active"}, headers=world.a.headers)
    assert r.json()["status"] == "active"
    assert conn.execute("SELECT status FROM whk.whk_03_entregas WHERE id = %s", (d,)).fetchone() == (
        "pending",
    )
    # pausing (whk.pause_webhook) leaves it pending: nothing is claimed until the webhook is active again
    r = await client.put(f"{BASE}/{hid}", json={"status": "paused"}, headers=world.a.headers)
    assert r.json()["status"] == "paused"
    assert conn.execute("SELECT status FROM whk.whk_03_entregas WHERE id = %s", (d,)).fetchone() == (
        "pending",
    )
    # deleting (whk.delete_webhook) cancels unfinished deliveries, and the audit row says how many
    r = await client.delete(f"{BASE}/{hid}", headers=world.a.headers)
    assert r.status_code == 204
    audit = conn.execute(
        "SELECT after FROM whk.audit_log WHERE action = 'webhook.delete' AND target_id = %s", (str(hid),)
    ).fetchone()
    assert audit is not None and audit[0]["cancelled_deliveries"] == 1
    assert conn.execute("SELECT status FROM whk.whk_03_entregas WHERE id = %s", (d,)).fetchone() == (
        "cancelled",
    )


async def test_outbound_credential_is_write_only_and_encrypted(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    r = await client.post(BASE, json=_body(auth_type="bearer"), headers=world.a.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/auth_credential"
    r = await client.post(
        BASE, json=_body(auth_type="bearer", auth_credential="tok-123456"), headers=world.a.headers
    )
    assert r.status_code == 201
    hook = r.json()["webhook"]
    assert hook["has_credential"] is True and "tok-123456" not in r.text
    enc = conn.execute(
        "SELECT auth_credential_enc FROM whk.whk_01_webhooks WHERE id = %s", (hook["id"],)
    ).fetchone()
    assert enc is not None and b"tok-123456" not in bytes(enc[0])
    r = await client.put(f"{BASE}/{hook['id']}", json={"auth_type": "none"}, headers=world.a.headers)
    assert r.json()["has_credential"] is False


async def test_simulator_sends_a_signed_event_and_reports_the_answer(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    async with Receiver(status=202, reply=b'{"accepted": true}') as rx:
        r = await client.post(
            BASE,
            json=_body(
                url=rx.url,
                headers={"X-Tenant": "acme"},
                auth_type="api_key",
                auth_header_name="X-Api-Key",
                auth_credential="k-secret",
            ),
            headers=world.a.headers,
        )
        secret = r.json()["signing_secret"]
        hid = r.json()["webhook"]["id"]
        r = await client.post(
            f"{BASE}/{hid}/test",
            json={"event_type": "order.created", "data": {"id": 7}},
            headers=world.a.headers,
        )
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["status"] == 202 and result["ok"] is True, (result["error_class"], result["error_detail"])
    assert result["response_excerpt"] == '{"accepted": true}'
    assert result["duration_ms"] > 0
    (req,) = rx.requests
    assert req.headers["x-tenant"] == "acme" and req.headers["x-api-key"] == "k-secret"
    # verified by the reference implementation, not by our own code
    payload = SwVerifier(secret).verify(req.body, dict(req.headers.items()))
    assert payload["type"] == "order.created" and payload["data"] == {"id": 7}
    assert audit_count(conn, "webhook.test") == 1


async def test_simulator_reports_connection_errors(client: AsyncTestClient[Any], world: World):
    async with Receiver() as rx:
        url = rx.url
    r = await client.post(BASE, json=_body(url=url), headers=world.a.headers)
    hid = r.json()["webhook"]["id"]
    r = await client.post(f"{BASE}/{hid}/test", json={}, headers=world.a.headers)
    assert r.status_code == 200
    assert r.json()["status"] is None and r.json()["error_class"] in ("refused", "connect")


async def test_logs_list_attempts_newest_first(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    r = await client.post(BASE, json=_body(), headers=world.a.headers)
    hid = r.json()["webhook"]["id"]
    d1 = make_delivery(conn, hid, status="dead", attempts=3)
    d2 = make_delivery(conn, hid, status="delivered", attempts=1)
    r = await client.get(f"{BASE}/{hid}/logs", params={"limit": 3}, headers=world.a.headers)
    assert r.status_code == 200
    page = r.json()
    assert [a["delivery_id"] for a in page["items"]] == [d2, d1, d1]
    assert page["next_cursor"]
    r = await client.get(
        f"{BASE}/{hid}/logs", params={"cursor": page["next_cursor"]}, headers=world.a.headers
    )
    assert [a["attempt_no"] for a in r.json()["items"]] == [1]
    r = await client.get(f"{BASE}/{hid}/logs", params={"status_code": 200}, headers=world.a.headers)
    assert [a["delivery_id"] for a in r.json()["items"]] == [d2]


async def test_nul_characters_are_a_client_error(client: AsyncTestClient[Any], world: World):
    # Valid JSON strings the schema accepts, which PostgreSQL cannot store: 422, never a 500.
    r = await client.get(BASE, params={"name_prefix": "a\x00b"}, headers=world.a.headers)
    assert r.status_code == 422, r.text
    r = await client.post(BASE, json=_body(name="a\x00b"), headers=world.a.headers)
    assert r.status_code == 422, r.text
    r = await client.post(BASE, json=_body(metadata={"k": "a\x00b"}), headers=world.a.headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_unknown_consumer_in_the_body_is_404(client: AsyncTestClient[Any], world: World):
    r = await client.post(BASE, json=_body(consumer_id=999_999), headers=world.admin)
    assert r.status_code == 404


async def test_logs_filtered_by_delivery_include_the_batch_attempt_it_took_part_in(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    hid = make_webhook(conn, world.a.consumer_id)
    first, second, attempt = make_batch(conn, hid)
    other = make_delivery(conn, hid, status="delivered", attempts=1)
    for d in (first, second):
        r = await client.get(f"{BASE}/{hid}/logs", params={"delivery_id": d}, headers=world.a.headers)
        assert r.status_code == 200, r.text
        assert [a["id"] for a in r.json()["items"]] == [attempt]
    r = await client.get(f"{BASE}/{hid}/logs", params={"delivery_id": other}, headers=world.a.headers)
    assert [a["delivery_id"] for a in r.json()["items"]] == [other]
