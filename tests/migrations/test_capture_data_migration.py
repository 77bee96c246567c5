"""Migration 0013 capture_data converts a live outbox without changing any event's delivered body."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.support.delivery import make_consumer, make_webhook
from whk import migrate
from whk.errors import MigrationError

pytestmark = pytest.mark.db

URL = "http://127.0.0.1:9/hook"


def _old_bodies(conn: psycopg.Connection[Any]) -> dict[int, str]:
    return {r[0]: r[1] for r in conn.execute("SELECT id, payload::text FROM whk.outbox").fetchall()}


def test_existing_events_keep_their_exact_body(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrate.migrate(conn, target=12)
        conn.execute("CREATE TABLE public.items (sku text PRIMARY KEY, qty int, note text)")
        conn.execute("SELECT whk.enable_capture('public.items', 'inv.item', 'sku')")
        hook = make_webhook(conn, make_consumer(conn), URL, ["*", "whk.webhook.disabled"])
        conn.execute("SELECT whk.outbox_create_partitions('2 days', 'day')")
        conn.execute("INSERT INTO public.items VALUES ('A', 1, 'first')")
        # An old event: no range partition covers last month, so it lives in the default partition.
        conn.execute("UPDATE whk.outbox SET created_at = created_at - interval '30 days'")
        # Several statements per transaction: their bodies carry statement times, not created_at.
        with psycopg.connect(empty_db_url) as tx:
            tx.execute("INSERT INTO public.items VALUES ('B', 2, NULL), ('C', 3, 'x')")
            tx.execute("SELECT pg_sleep(0.01)")
            tx.execute("UPDATE public.items SET qty = qty + 1, note = 'y' WHERE sku IN ('A', 'B')")
            tx.execute("DELETE FROM public.items WHERE sku = 'C'")
            tx.execute("SELECT whk.emit('system.health_check', '{\"status\": \"ok\", \"n\": 1.50}', 'k')")
        assert conn.execute("SELECT whk.route_outbox(1000)").fetchone() == (7,)
        conn.execute("SELECT whk.disable_webhook(%s, 'a test')", [hook])  # an EMIT row written directly
        conn.execute("SELECT whk.resume_webhook(%s)", [hook])  # its parked deliveries come back
        partitions = conn.execute("SELECT count(DISTINCT tableoid) FROM whk.outbox").fetchone()
        assert partitions == (2,)  # the default partition and a range partition both hold events
        before = _old_bodies(conn)
        assert len(before) == 8

        migrate.migrate(conn)

        after = {
            r[0]: r[1]
            for r in conn.execute("SELECT o.id, whk.event_envelope(o)::text FROM whk.outbox o").fetchall()
        }
        assert after == before
        view = dict(conn.execute("SELECT id, payload::text FROM whk.outbox_events").fetchall())
        assert view == before
        # What the dispatcher is handed for the deliveries routed before the upgrade.
        claimed = conn.execute(
            "SELECT d.outbox_id, c.payload FROM whk.claim_deliveries('d1', 100, 30) c"
            " JOIN whk.whk_03_entregas d ON d.id = c.delivery_id"
        ).fetchall()
        assert len(claimed) == 6  # every routed event but system.health_check ('*' leaves out system.*)
        assert all(body == before[outbox_id] for outbox_id, body in claimed)
        # Statement times differing from created_at are kept in occurred_at; the envelope column is gone.
        assert conn.execute("SELECT count(*) FROM whk.outbox WHERE occurred_at IS NOT NULL").fetchone() != (
            0,
        )
        assert conn.execute(
            "SELECT count(*) FROM information_schema.columns"
            " WHERE table_schema = 'whk' AND table_name = 'outbox' AND column_name = 'payload'"
        ).fetchone() == (0,)
        # The captured table's trigger function was regenerated: it writes the new columns.
        conn.execute("INSERT INTO public.items VALUES ('D', 4, NULL)")
        row = conn.execute(
            "SELECT o.data, o.occurred_at, e.payload -> 'data' ->> 'op',"
            " e.payload ->> 'timestamp'"
            " = to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
            " FROM whk.outbox o JOIN whk.outbox_events e USING (id, created_at) ORDER BY o.id DESC LIMIT 1"
        ).fetchone()
        assert row == ({"sku": "D", "qty": 4, "note": None}, None, "INSERT", True)


def test_a_body_that_cannot_be_rebuilt_stops_the_migration(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrate.migrate(conn, target=12)
        conn.execute("SELECT whk.emit('system.health_check', '{}')")
        (bad,) = conn.execute(
            "INSERT INTO whk.outbox (event_type, payload, operation)"
            " VALUES ('system.health_check', '{\"type\": \"system.health_check\", \"data\": {}}', 'EMIT')"
            " RETURNING id"
        ).fetchone() or (None,)
        with pytest.raises(MigrationError) as err:
            migrate.migrate(conn)
        assert "0013_capture_data.sql: 0013 capture_data: 1 outbox event(s)" in str(err.value)
        assert f"(outbox ids {bad})" in str(err.value) and "not written by WHK" in str(err.value)
        # Nothing changed: still at 12, the envelopes still stored.
        assert conn.execute("SELECT max(version) FROM whk.schema_migrations").fetchone() == (12,)
        assert conn.execute("SELECT count(payload) FROM whk.outbox").fetchone() == (2,)
