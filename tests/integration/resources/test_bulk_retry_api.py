"""Bulk retry as a background job, with the real job worker: a retry over thousands of dead letters runs in
batches to done and re-queues what the dry run counted; a cancel stops it between batches; another
tenant's bulk retry is not found; start and cancel are audited."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from tests.support.ops import ops_settings, worker
from tests.support.receiver import wait_until
from tests.support.resources import World, audit_count, make_webhook

pytestmark = pytest.mark.db

BASE = "/api/whk/deliveries"
JOBS = "/api/whk/bulk-retries"


def _dead_letters(conn: psycopg.Connection[Any], webhook_id: int, n: int) -> None:
    """``n`` routed outbox events whose delivery to ``webhook_id`` died (set-based: thousands of rows)."""
    conn.execute(
        """
        WITH o AS (
            INSERT INTO whk.outbox (event_id, event_type, data, operation, status, routed_at)
            SELECT gen_random_uuid(), 'order.created', '{"id": 1}', 'EMIT', 'routed', now()
            FROM generate_series(1, %(n)s)
            RETURNING id, created_at, event_id, event_type
        )
        INSERT INTO whk.delivery_queue (event_id, outbox_id, event_created_at, event_type, webhook_id,
                                         consumer_id, status, attempts, dead_at, dead_reason)
        SELECT o.event_id, o.id, o.created_at, o.event_type, w.id, w.consumer_id, 'dead', 1, now(),
               'retries exhausted'
        FROM o CROSS JOIN whk.whk_01_webhooks w WHERE w.id = %(webhook_id)s
        """,
        {"n": n, "webhook_id": webhook_id},
    )


def _count(conn: psycopg.Connection[Any], webhook_id: int, status: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM whk.whk_03_entregas WHERE webhook_id = %s AND status = %s", (webhook_id, status)
    ).fetchone()
    assert row is not None
    return int(row[0])


def _state(conn: psycopg.Connection[Any], bulk_id: int) -> str:
    row = conn.execute("SELECT state FROM whk.bulk_retries WHERE id = %s", (bulk_id,)).fetchone()
    assert row is not None
    return str(row[0])


async def test_bulk_retry_of_thousands_runs_as_a_job_to_done(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any], db_url: str
) -> None:
    hook = make_webhook(conn, world.a.consumer_id)
    foreign = make_webhook(conn, world.b.consumer_id)
    _dead_letters(conn, hook, 2500)
    _dead_letters(conn, foreign, 10)
    body = {"status": ["dead"], "dry_run": True}
    r = await client.post(f"{BASE}/bulk-retry", json=body, headers=world.a.headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"dry_run": True, "matched": 2500, "skipped_deleted_webhook": 0, "bulk_retry": None}
    assert _count(conn, hook, "dead") == 2500  # a dry run changes nothing
    r = await client.post(f"{BASE}/bulk-retry", json={**body, "dry_run": False}, headers=world.a.headers)
    assert r.status_code == 202, r.text
    job = r.json()["bulk_retry"]
    assert r.json()["matched"] == 2500
    assert (job["state"], job["total"], job["done"], job["consumer_id"]) == (
        "queued",
        2500,
        0,
        world.a.consumer_id,
    )
    assert _count(conn, hook, "dead") == 2500  # the request only queued the job
    # Another tenant's bulk retry is not found, to read or to cancel.
    r = await client.get(f"{JOBS}/{job['id']}", headers=world.b.headers)
    assert r.status_code == 404
    r = await client.post(f"{JOBS}/{job['id']}/cancel", headers=world.b.headers)
    assert r.status_code == 404
    async with worker(ops_settings(db_url)):
        assert await wait_until(lambda: _state(conn, job["id"]) == "done", 60)
    r = await client.get(f"{JOBS}/{job['id']}", headers=world.a.headers)
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["state"], got["total"], got["done"], got["requeued"], got["skipped"]) == (
        "done",
        2500,
        2500,
        2500,  # == the dry run's count
        0,
    )
    assert (_count(conn, hook, "pending"), _count(conn, hook, "dead")) == (2500, 0)
    assert _count(conn, foreign, "dead") == 10  # the other tenant's dead letters are untouched
    r = await client.get(f"{JOBS}/{job['id']}", headers=world.admin)
    assert r.status_code == 200  # an admin sees every tenant's
    r = await client.post(f"{JOBS}/{job['id']}/cancel", headers=world.a.headers)
    assert r.status_code == 409  # already done
    assert audit_count(conn, "bulk_retry.start") == 1
    assert audit_count(conn, "bulk_retry.cancel") == 0


async def test_cancel_stops_a_bulk_retry_between_batches(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any], db_url: str
) -> None:
    hook = make_webhook(conn, world.a.consumer_id)
    _dead_letters(conn, hook, 2500)
    r = await client.post(f"{BASE}/bulk-retry", json={"webhook_id": hook}, headers=world.a.headers)
    assert r.status_code == 202, r.text
    bulk_id = r.json()["bulk_retry"]["id"]
    # One batch, as the worker runs it, then the cancel.
    more = conn.execute("SELECT whk.bulk_retry_step(%s, 1000)", (bulk_id,)).fetchone()
    assert more == (True,)
    r = await client.post(f"{JOBS}/{bulk_id}/cancel", headers=world.a.headers)
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["done"], r.json()["requeued"]) == ("cancelled", 1000, 1000)
    # The worker then takes the job and re-queues nothing more.
    async with worker(ops_settings(db_url)):
        assert await wait_until(
            lambda: (
                conn.execute("SELECT count(*) FROM whk.pgqueuer WHERE entrypoint = 'bulk_retry'").fetchone()
                == (0,)
            ),
            30,
        )
    assert (_count(conn, hook, "pending"), _count(conn, hook, "dead")) == (1000, 1500)
    r = await client.get(f"{JOBS}/{bulk_id}", headers=world.a.headers)
    assert (r.json()["state"], r.json()["done"], r.json()["requeued"]) == ("cancelled", 1000, 1000)
    assert audit_count(conn, "bulk_retry.cancel") == 1


async def test_bulk_retry_step_refuses_a_batch_size_out_of_bounds(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
) -> None:
    hook = make_webhook(conn, world.a.consumer_id)
    r = await client.post(f"{BASE}/bulk-retry", json={"webhook_id": hook}, headers=world.a.headers)
    bulk_id = r.json()["bulk_retry"]["id"]
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        conn.execute("SELECT whk.bulk_retry_step(%s, 0)", (bulk_id,))
    assert err.value.diag.message_hint is not None


async def test_the_deliveries_scope_covers_bulk_retries(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
) -> None:
    from api.keys import create_api_key

    cid = world.a.consumer_id
    deliveries = create_api_key(
        conn, admin=False, consumer_id=cid, name="ops", scopes=["deliveries:*"], actor="test"
    )
    webhooks = create_api_key(
        conn, admin=False, consumer_id=cid, name="hooks", scopes=["webhooks:write"], actor="test"
    )
    hook = make_webhook(conn, cid)
    _dead_letters(conn, hook, 3)
    auth = {"Authorization": f"Bearer {deliveries}"}
    r = await client.post(f"{BASE}/bulk-retry", json={"webhook_id": hook}, headers=auth)
    assert r.status_code == 202, r.text
    bulk_id = r.json()["bulk_retry"]["id"]
    r = await client.get(f"{JOBS}/{bulk_id}", headers=auth)
    assert r.status_code == 200, r.text  # the key that started it may follow it
    r = await client.get(f"{JOBS}/{bulk_id}", headers={"Authorization": f"Bearer {webhooks}"})
    assert r.status_code == 403  # a key without the deliveries scope may not
    r = await client.post(f"{JOBS}/{bulk_id}/cancel", headers=auth)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
