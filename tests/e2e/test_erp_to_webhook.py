"""The product promise end to end: an ERP commits a row and a signed webhook arrives.

Real processes (`whk api`, `whk dispatcher`), a real PostgreSQL with the demo ERP installed, the webhook
registered through the API, delivered to the API's own development mock endpoint over HTTP, and the
signature verified with the `standardwebhooks` package (not our code).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import port_for
import psycopg
import pytest
from standardwebhooks.webhooks import Webhook

from api.keys import create_api_key
from tests.support.dispatch import FAST_ENV
from tests.support.pg import REPO
from tests.support.wait import wait_for

pytestmark = [pytest.mark.db, pytest.mark.e2e, pytest.mark.slow]

WHK = str(Path(sys.executable).with_name("whk"))


@pytest.fixture
def services(db_url: str) -> Iterator[str]:
    port = port_for.select_random()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    env.update({**FAST_ENV, "WHK_DATABASE_URL": db_url, "WHK_API_PORT": str(port)})
    procs = [
        subprocess.Popen([WHK, part], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for part in ("api", "dispatcher")
    ]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _health(base), 60, "the API to answer /monitoring/health", interval=0.2)
        yield base
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.communicate(timeout=30)  # also closes the pipes


def _health(base: str) -> bool:
    try:
        return httpx.get(f"{base}/api/whk/monitoring/health", timeout=1).status_code in (200, 503)
    except httpx.TransportError:
        return False


def _settled(conn: psycopg.Connection[Any]) -> bool:
    """Every committed event is routed and every delivery has ended (delivered, dead or parked)."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM whk.outbox WHERE status = 'pending')"
        " + (SELECT count(*) FROM whk.whk_03_entregas WHERE status NOT IN ('delivered', 'dead', 'parked'))"
    ).fetchone()
    return row is not None and row[0] == 0


def test_committed_order_arrives_signed_and_rolled_back_one_does_not(
    db_url: str, conn: psycopg.Connection[Any], services: str
):
    conn.execute((REPO / "sql" / "demo" / "erp.sql").read_bytes())
    admin = {"Authorization": f"Bearer {create_api_key(conn, admin=True, consumer_id=None, name='e2e')}"}
    with httpx.Client(base_url=services, headers=admin, timeout=10) as api:
        _order_to_mock(conn, api, services)


def _order_to_mock(conn: psycopg.Connection[Any], api: httpx.Client, services: str) -> None:
    consumer = api.post("/api/whk/consumers", json={"name": "acme"})
    assert consumer.status_code == 201, consumer.text
    created = api.post(
        "/api/whk/webhooks",
        json={
            "consumer_id": consumer.json()["id"],
            "name": "orders to mock",
            "url": f"{services}/api/whk/dev/mock/orders",
            "event_types": ["order.*"],
        },
    )
    assert created.status_code == 201, created.text
    secret = created.json()["signing_secret"]

    user_id = conn.execute(
        "INSERT INTO erp.users (email, name) VALUES ('a@b.c', 'Ana') RETURNING id"
    ).fetchone()[0]
    with conn.transaction():  # committed: one order.created
        conn.execute("INSERT INTO erp.orders (user_id, total) VALUES (%s, 120.50)", (user_id,))
    with conn.transaction() as tx:  # rolled back: nothing
        conn.execute("INSERT INTO erp.orders (user_id, total) VALUES (%s, 999)", (user_id,))
        raise psycopg.Rollback(tx)  # the ERP changed its mind

    mock = "/api/whk/dev/mock/orders/requests"
    wait_for(lambda: api.get(mock).json(), 30, "the order at the mock", interval=0.2)
    # A wrongly emitted second event would be routed and delivered before the outbox and deliveries settle
    # (the mock stores a request before its delivery is marked delivered).
    wait_for(lambda: _settled(conn), 30, "every event routed and every delivery ended", interval=0.2)
    received = api.get(mock).json()
    assert len(received) == 1
    got = received[0]
    body = json.loads(got["body"])
    assert body["type"] == "order.created"
    assert body["data"]["new"]["total"] == 120.5
    headers = {k: v for k, v in got["headers"].items() if k.startswith("webhook-")}
    Webhook(secret).verify(got["body"], headers)  # raises on a bad signature
    assert got["signature_ok"] is True, got  # the mock verified it with the same secret
    assert got["headers"]["user-agent"].startswith("WHK")
