"""Replay through the API with the real job worker and dispatcher: a delivered event replayed arrives again
with the same webhook-id; the predicate and the tenant are honoured; dry_run counts; cancel stops it;
a range older than the outbox retention is refused naming the field and the horizon."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from tests.support import delivery
from tests.support.dispatch import fast_settings, running
from tests.support.ops import ops_settings, worker
from tests.support.receiver import Receiver, receiver, wait_until
from tests.support.resources import World, audit_count, make_webhook

pytestmark = pytest.mark.db

__all__ = ["receiver"]  # the fixture


def _iso(t: datetime) -> str:
    return t.isoformat()


async def test_replay_sends_again_with_the_same_webhook_id_and_honours_the_predicate(
    client: AsyncTestClient[Any],
    world: World,
    conn: psycopg.Connection[Any],
    db_url: str,
    receiver: Receiver,
) -> None:
    hook = delivery.make_webhook(conn, world.a.consumer_id, receiver.url("/in"), ["order.*"])
    first = delivery.emit(conn, "order.created", {"total": 500})[0]
    delivery.emit(conn, "order.created", {"total": 5})
    async with running(fast_settings(db_url)):
        assert await wait_until(lambda: len(receiver.to("/in")) == 2, 30)
        ids = {json.loads(r.body)["data"]["total"]: r.headers["webhook-id"] for r in receiver.to("/in")}
        assert ids[500].endswith(first.replace("-", ""))  # webhook-id: msg_ + the event id
        since = datetime.now(UTC) - timedelta(hours=1)
        body = {"since": _iso(since), "where": "$.data.total > 100", "dry_run": True}
        r = await client.post(f"/api/whk/webhooks/{hook}/replay", json=body, headers=world.a.headers)
        assert r.status_code == 200, r.text
        assert r.json() == {"dry_run": True, "matched": 1, "replay": None}
        # Another tenant's webhook is not found, dry run or not.
        r = await client.post(f"/api/whk/webhooks/{hook}/replay", json=body, headers=world.b.headers)
        assert r.status_code == 404
        async with worker(ops_settings(db_url)):
            r = await client.post(
                f"/api/whk/webhooks/{hook}/replay", json={**body, "dry_run": False}, headers=world.a.headers
            )
            assert r.status_code == 200, r.text
            replay = r.json()["replay"]
            assert (replay["total"], replay["webhook_id"]) == (1, hook)
            assert await wait_until(lambda: len(receiver.to("/in")) == 3, 30)
        again = receiver.to("/in")[2]
        assert again.headers["webhook-id"] == ids[500]  # the same webhook-id as the first time
        assert json.loads(again.body)["data"]["total"] == 500
    r = await client.get(f"/api/whk/replays/{replay['id']}", headers=world.a.headers)
    assert r.status_code == 200
    assert (r.json()["state"], r.json()["done"], r.json()["total"], r.json()["requeued"]) == ("done", 1, 1, 1)
    r = await client.get(f"/api/whk/replays/{replay['id']}", headers=world.b.headers)
    assert r.status_code == 404  # another tenant's replay
    r = await client.post(f"/api/whk/replays/{replay['id']}/cancel", headers=world.a.headers)
    assert r.status_code == 409  # already done
    rows = conn.execute(
        "SELECT count(*) FROM whk.whk_03_entregas WHERE webhook_id = %s AND event_id = %s", (hook, first)
    ).fetchone()
    assert rows == (1,)
    assert audit_count(conn, "replay.start") == 1


async def test_cancel_stops_a_queued_replay(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any], db_url: str
) -> None:
    hook = make_webhook(conn, world.a.consumer_id)
    conn.execute("UPDATE whk.whk_01_webhooks SET event_types = '{*}' WHERE id = %s", (hook,))
    delivery.emit(conn, "order.created", count=3)
    delivery.route(conn)
    conn.execute("DELETE FROM whk.delivery_queue WHERE webhook_id = %s", (hook,))
    since = _iso(datetime.now(UTC) - timedelta(hours=1))
    r = await client.post(f"/api/whk/webhooks/{hook}/replay", json={"since": since}, headers=world.a.headers)
    replay = r.json()["replay"]
    assert (replay["state"], replay["total"]) == ("queued", 3)
    r = await client.post(f"/api/whk/replays/{replay['id']}/cancel", headers=world.b.headers)
    assert r.status_code == 404
    r = await client.post(f"/api/whk/replays/{replay['id']}/cancel", headers=world.a.headers)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "cancelled"
    # The worker then takes the job and does nothing.
    async with worker(ops_settings(db_url)):
        assert await wait_until(
            lambda: (
                conn.execute("SELECT count(*) FROM whk.pgqueuer WHERE entrypoint = 'replay'").fetchone()
                == (0,)
            ),
            30,
        )
    left = conn.execute("SELECT count(*) FROM whk.whk_03_entregas WHERE webhook_id = %s", (hook,)).fetchone()
    assert left == (0,)
    assert audit_count(conn, "replay.cancel") == 1


async def test_replay_input_is_checked(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
) -> None:
    hook = make_webhook(conn, world.a.consumer_id)
    conn.execute("UPDATE whk.whk_05_configuracoes SET value = '7' WHERE key = 'retention.outbox_days'")
    url = f"/api/whk/webhooks/{hook}/replay"
    old = _iso(datetime.now(UTC) - timedelta(days=8))
    r = await client.post(url, json={"since": old}, headers=world.a.headers)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["errors"][0]["pointer"] == "/since"
    assert "retention horizon" in problem["errors"][0]["message"]
    horizon = datetime.fromisoformat(problem["horizon"])
    assert timedelta(days=6) < datetime.now(UTC) - horizon < timedelta(days=8)
    recent = _iso(datetime.now(UTC) - timedelta(hours=1))
    r = await client.post(url, json={"since": recent, "where": "$.a ==="}, headers=world.a.headers)
    assert r.status_code == 422
    assert r.json()["errors"][0]["pointer"] == "/where"
    r = await client.post(url, json={"since": recent, "until": old}, headers=world.a.headers)
    assert r.json()["errors"][-1]["pointer"] == "/until"
    r = await client.post(url, json={"since": recent, "event_types": ["bad type"]}, headers=world.a.headers)
    assert r.status_code == 400
    assert conn.execute("SELECT count(*) FROM whk.replays").fetchone() == (0,)


async def test_the_webhooks_scope_covers_replays(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
) -> None:
    """A replay is started under /webhooks: a key scoped to webhooks may follow and cancel it, one scoped
    to deliveries may not."""
    from api.keys import create_api_key

    cid = world.a.consumer_id
    hooks_key = create_api_key(
        conn, admin=False, consumer_id=cid, name="hooks", scopes=["webhooks:*"], actor="test"
    )
    other_key = create_api_key(
        conn, admin=False, consumer_id=cid, name="ops", scopes=["deliveries:*"], actor="test"
    )
    hook = make_webhook(conn, cid)
    conn.execute("UPDATE whk.whk_01_webhooks SET event_types = '{*}' WHERE id = %s", (hook,))
    delivery.emit(conn, "order.created", count=2)
    delivery.route(conn)
    conn.execute("DELETE FROM whk.delivery_queue WHERE webhook_id = %s", (hook,))
    auth = {"Authorization": f"Bearer {hooks_key}"}
    since = _iso(datetime.now(UTC) - timedelta(hours=1))
    r = await client.post(f"/api/whk/webhooks/{hook}/replay", json={"since": since}, headers=auth)
    assert r.status_code == 200, r.text
    replay_id = r.json()["replay"]["id"]
    r = await client.get(f"/api/whk/replays/{replay_id}", headers=auth)
    assert r.status_code == 200, r.text
    r = await client.get(f"/api/whk/replays/{replay_id}", headers={"Authorization": f"Bearer {other_key}"})
    assert r.status_code == 403
    r = await client.post(f"/api/whk/replays/{replay_id}/cancel", headers=auth)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
