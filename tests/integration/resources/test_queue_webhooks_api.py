"""Queue targets through the API: redis:// URLs are accepted and checked, a broker login never rides in the
URL (it is the encrypted basic credential, never shown), and the SQL control plane agrees."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from tests.support.resources import World

pytestmark = pytest.mark.db

BASE = "/api/whk/webhooks"


async def test_redis_target_with_its_login_as_the_encrypted_credential(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    body = {
        "name": "stream",
        "url": "redis://127.0.0.1:6379/orders?maxlen=10000",
        "event_types": ["order.*"],
        "auth_type": "basic",
        "auth_credential": "whk:br0ker-pw",
    }
    r = await client.post(BASE, json=body, headers=world.a.headers)
    assert r.status_code == 201, r.text
    hook = r.json()["webhook"]
    assert hook["url"] == body["url"]
    assert "br0ker-pw" not in r.text
    r = await client.get(f"{BASE}/{hook['id']}", headers=world.a.headers)
    assert "br0ker-pw" not in r.text
    row = conn.execute(
        "SELECT auth_credential_enc FROM whk.whk_01_webhooks WHERE id = %s", [hook["id"]]
    ).fetchone()
    assert row is not None and b"br0ker-pw" not in bytes(row[0])


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://:pw@127.0.0.1/orders", "userinfo"),
        ("amqp://guest:guest@127.0.0.1/", "userinfo"),
        ("redis://127.0.0.1:6379/", "stream"),
        ("redis://127.0.0.1:6379/s?maxlen=0", "maxlen"),
        ("redis://10.1.2.3/s", "private"),
        ("redis://169.254.169.254/s", "metadata"),
    ],
)
async def test_bad_queue_urls_are_refused_naming_the_problem(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any], url: str, says: str
):
    r = await client.post(BASE, json={"name": "q", "url": url, "event_types": ["*"]}, headers=world.a.headers)
    assert r.status_code == 422, r.text
    (err,) = [e for e in r.json()["errors"] if e["pointer"] == "/url"]
    assert says in err["message"]
    assert conn.execute("SELECT count(*) FROM whk.whk_01_webhooks").fetchone() == (0,)


def test_sql_control_plane_accepts_queue_urls_and_refuses_a_login_in_them(
    conn: psycopg.Connection[Any], world: World
):
    conn.execute(
        "SELECT whk.create_webhook(consumer_id => %s, name => 'q', url => 'amqps://mq.example.com/whk', "
        "event_types => '{*}')",
        [world.a.consumer_id],
    )
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        conn.execute(
            "SELECT whk.create_webhook(consumer_id => %s, name => 'q2', "
            "url => 'redis://u:pw@cache.example.com/s', event_types => '{*}')",
            [world.a.consumer_id],
        )
    assert "carries no login" in str(err.value)
    assert err.value.diag.message_hint
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO whk.whk_01_webhooks (consumer_id, name, url, event_types) "
            "VALUES (%s, 'raw', 'rediss://:pw@cache.example.com/s', '{*}')",
            [world.a.consumer_id],
        )


async def test_the_test_send_says_it_speaks_http_only_for_a_queue_target(
    client: AsyncTestClient[Any], world: World
):
    body = {"name": "stream", "url": "redis://127.0.0.1:9/orders", "event_types": ["*"]}
    r = await client.post(BASE, json=body, headers=world.a.headers)
    assert r.status_code == 201, r.text
    r = await client.post(f"{BASE}/{r.json()['webhook']['id']}/test", json={}, headers=world.a.headers)
    assert r.status_code == 200, r.text
    result = r.json()
    assert (result["status"], result["ok"], result["error_class"]) == (None, False, "protocol")
    assert "HTTP(S) only" in result["error_detail"]
