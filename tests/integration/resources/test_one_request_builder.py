"""One webhook request, two senders: the dispatcher's delivery of an event (aiohttp) and the API's test
send of the same event to the same webhook (httpx) arrive byte-identical, apart from the values that
depend on the moment (the envelope's timestamp, webhook-timestamp, the signature over them) and the
webhook-id, which marks a test as a test. Both build it with whk/webhook_request.py and whk.event_envelope."""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg
from litestar.testing import AsyncTestClient
from standardwebhooks.webhooks import Webhook as SwVerifier

from tests.support.delivery import statuses
from tests.support.dispatch import fast_settings, running
from tests.support.receiver import wait_until
from tests.support.resources import Receiver, World

# Headers each transport owns (framing, connection, its own Accept defaults): not the request builder's.
TRANSPORT = frozenset({"host", "content-length", "connection", "accept", "accept-encoding"})
MOMENT = frozenset({"webhook-id", "webhook-timestamp", "webhook-signature"})
TIMESTAMP = re.compile(rb'"timestamp": "[^"]+"')


def comparable(headers: dict[str, str], body: bytes) -> tuple[dict[str, str], bytes]:
    kept = {k.lower(): v for k, v in headers.items() if k.lower() not in TRANSPORT | MOMENT}
    return kept, TIMESTAMP.sub(b'"timestamp": "T"', body)


async def test_the_dispatcher_and_the_test_send_build_the_same_request(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any], db_url: str
):
    # The dispatcher reads the secrets the API sealed: the same keys (the API's settings: the dev key).
    data = {"id": 7, "items": [{"sku": "A-1", "qty": 2}], "note": "ação"}
    async with Receiver() as rx:
        r = await client.post(
            "/api/whk/webhooks",
            json={
                "name": "one builder",
                "url": rx.url,
                "event_types": ["order.*"],
                "headers": {"X-Tenant": "acme", "X-Secret-Token": "t0k"},
                "auth_type": "basic",
                "auth_credential": "user:pa ss",
            },
            headers=world.a.headers,
        )
        assert r.status_code == 201, r.text
        secret, hid = r.json()["signing_secret"], r.json()["webhook"]["id"]
        r = await client.post(
            f"/api/whk/webhooks/{hid}/test",
            json={"event_type": "order.created", "data": data},
            headers=world.a.headers,
        )
        assert r.status_code == 200 and r.json()["ok"], r.text
        conn.execute(
            "INSERT INTO whk.outbox (event_type, data, operation) "
            "VALUES ('order.created', %s::jsonb, 'EMIT')",
            [json.dumps(data)],
        )
        async with running(fast_settings(db_url, WHK_SECRET_KEYS="")):
            assert await wait_until(lambda: statuses(conn, hid) == {"delivered": 1}, 15)
    test_send, delivery = rx.requests
    for req in (test_send, delivery):
        assert SwVerifier(secret).verify(req.body, dict(req.headers))["data"] == data
    assert test_send.headers["webhook-id"].startswith("msg_test_")
    assert delivery.headers["webhook-id"].startswith("msg_") and not delivery.headers[
        "webhook-id"
    ].startswith("msg_test_")
    assert (test_send.method, test_send.path) == (delivery.method, delivery.path)
    assert comparable(test_send.headers, test_send.body) == comparable(delivery.headers, delivery.body)
    # What was compared: every header the builder writes, and the whole body but its timestamp.
    kept, _ = comparable(delivery.headers, delivery.body)
    assert {"content-type", "user-agent", "x-tenant", "x-secret-token", "authorization"} <= kept.keys()
    assert kept["authorization"] == "Basic dXNlcjpwYSBzcw=="
