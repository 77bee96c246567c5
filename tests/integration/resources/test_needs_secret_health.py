"""Health shows webhooks waiting for a signing secret (never sent unsigned) and is ok again once the job
worker's provisioning (here: the same function, called directly) gave them one."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from tests.support.delivery import TEST_BOX, make_consumer, make_webhook
from whk.webhook_secrets import provision_pending

pytestmark = pytest.mark.db

HEALTH = "/api/whk/monitoring/health"


async def test_health_lists_webhooks_waiting_for_a_signing_secret(
    client: AsyncTestClient[Any], conn: psycopg.Connection[Any]
):
    conn.execute("INSERT INTO whk.dispatchers (id, hostname, pid, version) VALUES ('d1', 'host', 1, 'test')")
    c = make_consumer(conn)
    with conn.transaction():
        make_webhook(conn, c, "http://127.0.0.1:9/signed")
    assert (await client.get(HEALTH)).json()["status"] == "ok"
    hook = make_webhook(conn, c, "http://127.0.0.1:9/sql", secret=None)
    body = (await client.get(HEALTH)).json()
    assert body["status"] == "degraded"
    assert body["needs_secret_webhooks"] == [hook]
    assert any("wait for a signing secret" in p and str(hook) in p for p in body["problems"])
    assert len(provision_pending(conn, TEST_BOX)) == 1
    body = (await client.get(HEALTH)).json()
    assert body["status"] == "ok" and body["needs_secret_webhooks"] == []
