"""Never unsigned: a webhook without a current signing secret waits (needs_secret_since), its deliveries stay
pending, and the database queues the job worker's provision_secret job at commit."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.support.delivery import TEST_BOX, emit, make_consumer, make_webhook, route, statuses
from whk.secretbox import row_aad
from whk.signing import decode_secret
from whk.webhook_secrets import current_secret, provision_pending, provision_secret

pytestmark = pytest.mark.db

URL = "http://127.0.0.1:9/hook"


def claim(conn: psycopg.Connection[Any]) -> list[int]:
    rows = conn.execute("SELECT delivery_id FROM whk.claim_deliveries('d1', 100, 30)").fetchall()
    return [int(r[0]) for r in rows]


def take(conn: psycopg.Connection[Any]) -> list[int]:
    rows = conn.execute(
        "SELECT delivery_id FROM whk.route_and_take(1000, 'd1', 100, 30) WHERE delivery_id IS NOT NULL"
    ).fetchall()
    return [int(r[0]) for r in rows]


def needs_secret(conn: psycopg.Connection[Any], hook: int) -> bool:
    row = conn.execute(
        "SELECT needs_secret_since IS NOT NULL FROM whk.whk_01_webhooks WHERE id = %s", [hook]
    ).fetchone()
    assert row is not None
    return bool(row[0])


def jobs(conn: psycopg.Connection[Any], hook: int) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT status::text, convert_from(payload, 'UTF8') FROM whk.pgqueuer "
        "WHERE entrypoint = 'provision_secret' AND dedupe_key = 'provision_secret:' || %s::text",
        [hook],
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def test_a_webhook_inserted_in_sql_waits_for_its_secret_and_its_deliveries_stay_pending(conn):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, URL, ["o.*"], secret=None)
    assert needs_secret(conn, hook)
    assert jobs(conn, hook) == [("queued", str(hook))]  # queued at its commit, once
    emit(conn, "o.created", count=3)
    assert take(conn) == []  # routed (nothing lost) but not taken
    assert statuses(conn, hook) == {"pending": 3}
    assert claim(conn) == []  # nor claimed: nothing can go out unsigned
    assert conn.execute("SELECT whk.next_wakeup()").fetchone() == (None,)  # no wake-up for it either

    made = provision_secret(conn, TEST_BOX, hook)
    assert made is not None and made.secret.startswith("whsec_")
    assert not needs_secret(conn, hook)
    assert provision_secret(conn, TEST_BOX, hook) is None  # already has one: nothing added
    assert current_secret(conn, TEST_BOX, hook) == made.secret
    decode_secret(made.secret)
    stored = conn.execute(
        "SELECT id, secret_enc FROM whk.webhook_secrets WHERE webhook_id = %s", [hook]
    ).fetchall()
    assert len(stored) == 1
    assert made.secret.encode() not in bytes(stored[0][1])  # sealed, bound to its row
    assert TEST_BOX.decrypt(bytes(stored[0][1]), row_id=row_aad("webhook_secrets", stored[0][0])) == (
        made.secret.encode()
    )
    assert len(claim(conn)) == 3


def test_a_webhook_created_with_its_secret_in_one_transaction_queues_no_job(conn):
    c = make_consumer(conn)
    with conn.transaction():  # what the API's create does: the row, then its secret
        hook = make_webhook(conn, c, URL, ["o.*"])
    assert not needs_secret(conn, hook)
    assert jobs(conn, hook) == []


def test_a_webhook_whose_secret_is_removed_waits_and_is_not_sent_unsigned(conn):
    c = make_consumer(conn)
    with conn.transaction():
        hook = make_webhook(conn, c, URL, ["o.*"])
        other = make_webhook(conn, c, URL, ["o.*"])
    assert jobs(conn, hook) == []
    emit(conn, "o.created", count=2)
    route(conn)
    conn.execute("DELETE FROM whk.webhook_secrets WHERE webhook_id = %s", [hook])
    assert needs_secret(conn, hook) and not needs_secret(conn, other)
    assert jobs(conn, hook) == [("queued", str(hook))]
    claimed = claim(conn)
    assert len(claimed) == 2  # the other webhook's only
    assert statuses(conn, hook) == {"pending": 2}
    assert statuses(conn, other) == {"in_flight": 2}
    # Deleting again queues no second job while the first is queued (dedupe key).
    conn.execute("UPDATE whk.whk_01_webhooks SET needs_secret_since = NULL WHERE id = %s", [hook])
    assert needs_secret(conn, hook)  # derived, never trusted from the writer
    assert len(jobs(conn, hook)) == 1
    assert provision_pending(conn, TEST_BOX) != []
    assert not needs_secret(conn, hook)
    assert len(claim(conn)) == 2


def test_expiring_the_only_current_secret_by_hand_asks_for_a_new_one(conn):
    c = make_consumer(conn)
    with conn.transaction():
        hook = make_webhook(conn, c, URL, ["o.*"])
    assert jobs(conn, hook) == []
    conn.execute(
        "UPDATE whk.webhook_secrets SET expires_at = now() + interval '1 hour' WHERE webhook_id = %s", [hook]
    )
    assert needs_secret(conn, hook)
    assert jobs(conn, hook) == [("queued", str(hook))]


def test_a_deleted_webhook_gets_no_secret_job(conn):
    c = make_consumer(conn)
    with conn.transaction():
        hook = make_webhook(conn, c, URL, ["o.*"])
    conn.execute("SELECT whk.delete_webhook(%s)", [hook])
    assert jobs(conn, hook) == []
    assert provision_secret(conn, TEST_BOX, hook) is None
