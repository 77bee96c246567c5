"""Migration 0023 delivery_fk: one composite foreign key (webhook_id, consumer_id) on whk_03_entregas."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from tests.support.delivery import make_consumer, make_webhook
from whk import migrate
from whk.errors import MigrationError

pytestmark = pytest.mark.db


def _deliver(conn: psycopg.Connection[Any], webhook: int, consumer: int) -> int:
    row = conn.execute(
        "INSERT INTO whk.whk_03_entregas (event_id, outbox_id, event_created_at, event_type, webhook_id,"
        " consumer_id) VALUES (%s, 1, now(), 'x.y', %s, %s) RETURNING id",
        (uuid.uuid4(), webhook, consumer),
    ).fetchone()
    assert row is not None
    return int(row[0])


OLD_KEYS = ["whk_03_entregas_consumer_id_fkey", "whk_03_entregas_webhook_id_fkey"]


def _foreign_keys(conn: psycopg.Connection[Any]) -> dict[str, str]:
    rows = conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = 'whk.whk_03_entregas'::regclass AND contype = 'f'"
    ).fetchall()
    return {str(n): str(d) for n, d in rows}


def test_two_keys_become_one_that_ties_the_consumer_to_the_webhook(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrate.migrate(conn, target=22)
        acme, other = make_consumer(conn, "acme"), make_consumer(conn, "other")
        hook = make_webhook(conn, acme, "https://example.com/a")
        kept = _deliver(conn, hook, acme)
        assert sorted(_foreign_keys(conn)) == OLD_KEYS

        migrate.migrate(conn)

        assert _foreign_keys(conn) == {
            "whk_03_entregas_webhook_consumer_fkey": "FOREIGN KEY (webhook_id, consumer_id) "
            "REFERENCES whk.whk_01_webhooks(id, consumer_id)"
        }
        # One check trigger per event (insert, update) instead of one per key.
        checks = conn.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'whk.whk_03_entregas'::regclass"
            " AND tgconstraint <> 0 AND tgfoid = 'pg_catalog.\"RI_FKey_check_ins\"'::regproc"
        ).fetchone()
        assert checks == (1,)
        kept_rows = conn.execute("SELECT count(*) FROM whk.whk_03_entregas WHERE id = %s", (kept,)).fetchone()
        assert kept_rows == (1,)
        _deliver(conn, hook, acme)
        # Stricter than before: another tenant's consumer id on this webhook's delivery is refused.
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            _deliver(conn, hook, other)
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            _deliver(conn, hook + 1000, acme)
        # The consumer is still protected through its webhook.
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("DELETE FROM whk.whk_04_assinantes WHERE id = %s", (acme,))


def test_rows_that_break_the_new_key_are_named_and_nothing_is_applied(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrate.migrate(conn, target=22)
        acme, other = make_consumer(conn, "acme"), make_consumer(conn, "other")
        hook = make_webhook(conn, acme, "https://example.com/a")
        bad = _deliver(conn, hook, other)  # two separate keys at 0022: both parents exist

        with pytest.raises(MigrationError) as caught:
            migrate.migrate(conn)

        assert caught.value.message.startswith("0023_delivery_fk.sql: ")
        assert f"1 deliveries name a consumer that is not their webhook's (ids {bad})" in caught.value.message
        assert caught.value.hint is not None
        assert "UPDATE" in caught.value.hint
        assert isinstance(caught.value.__cause__, psycopg.errors.ForeignKeyViolation)
        assert sorted(_foreign_keys(conn)) == OLD_KEYS
        assert conn.execute("SELECT max(version) FROM whk.schema_migrations").fetchone() == (22,)

        conn.execute("UPDATE whk.whk_03_entregas SET consumer_id = %s WHERE id = %s", (acme, bad))
        migrate.migrate(conn)
        assert list(_foreign_keys(conn)) == ["whk_03_entregas_webhook_consumer_fkey"]
