"""`whk explain "…"`: an UPDATE on a captured table shows its event, the webhook it reaches with the
request the dispatcher would send, signed (verified with the `standardwebhooks` package, with the
webhook's current and grace-period secrets), the webhooks it does not reach with the reason; nothing is
left behind; unsafe statements are refused in one line with a hint, before or after reaching PostgreSQL."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from standardwebhooks.webhooks import Webhook

from dispatcher.request import event_message_id
from tests.db.capture_support import install_demo
from tests.integration.test_cli import assert_one_line_error, run
from tests.support.delivery import TEST_SECRET, TEST_SECRET_KEYS, add_secret, make_consumer, make_webhook
from whk.signing import generate_secret
from whk_cli.explain import ExplainRefused, check_statement

pytestmark = pytest.mark.db

UPDATE = "UPDATE erp.orders SET status = 'paid' WHERE id = 1"


def _state(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT (SELECT jsonb_agg(o ORDER BY o.id) FROM erp.orders o), "
        "(SELECT count(*) FROM whk.outbox), (SELECT count(*) FROM whk.whk_03_entregas), "
        "(SELECT count(*) FROM whk.pgqueuer)"
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_explain_from_the_shell(db_url: str, conn: psycopg.Connection[Any]) -> None:
    install_demo(conn)
    conn.execute("INSERT INTO erp.users (email, name) VALUES ('ana@example.com', 'Ana')")
    conn.execute("INSERT INTO erp.orders (user_id, total) VALUES (1, 250)")
    consumer = make_consumer(conn)
    orders = make_webhook(
        conn,
        consumer,
        "https://acme.example/orders",
        ["order.*"],
        name="orders",
        headers={"X-Tenant": "acme"},
        auth_type="bearer",
        auth_credential="s3cret-token",
    )
    old_secret = generate_secret()
    add_secret(conn, orders, old_secret, expires_at=datetime.now(UTC) + timedelta(hours=1))
    make_webhook(
        conn, consumer, "https://acme.example/big", ["order.*"], name="big", filter="$.data.new.total > 1000"
    )
    make_webhook(conn, consumer, "https://acme.example/users", ["user.*"], name="users")
    unsigned = make_webhook(conn, consumer, "https://acme.example/new", ["order.*"], name="new", secret=None)
    conn.execute("TRUNCATE whk.outbox")
    conn.execute("DELETE FROM whk.pgqueuer")
    before = _state(conn)
    env = {"WHK_DATABASE_URL": db_url, "WHK_SECRET_KEYS": TEST_SECRET_KEYS}

    done = run("explain", UPDATE, "--json", env=env)
    assert done.returncode == 0, done.stderr
    (event,) = json.loads(done.stdout)
    assert event["event_type"] == "order.updated"
    assert event["event_key"] == "1"
    targets = {t["webhook_name"]: t for t in event["targets"]}
    assert set(targets) == {"orders", "big", "users", "new"}

    hit = targets["orders"]
    assert hit["routed"] is True and hit["reason"] is None
    req = hit["request"]
    assert (req["method"], req["url"]) == ("POST", "https://acme.example/orders")
    headers = req["headers"]
    assert headers["webhook-id"] == event_message_id(uuid.UUID(event["event_id"]))
    assert headers["X-Tenant"] == "acme"
    assert headers["Authorization"] != "Bearer s3cret-token"  # credentials are masked, as in the attempt log
    assert "s3cret-token" not in done.stdout
    # Signed with both valid secrets (newest first), as the dispatcher signs; each verifies.
    assert len(headers["webhook-signature"].split()) == 2
    for secret in (TEST_SECRET, old_secret):
        payload = Webhook(secret).verify(req["body"], headers)
        assert payload["type"] == "order.updated"
        assert payload["data"]["new"]["status"] == "paid"
        assert payload["data"]["changed"] == ["status"]

    assert targets["big"]["routed"] is False and "filter" in targets["big"]["reason"]
    assert targets["big"]["request"] is None
    assert "not among its event types" in targets["users"]["reason"]
    # Routed, but nothing goes out unsigned: it waits for its secret and no request is shown.
    new = targets["new"]
    assert new["routed"] is True and new["request"] is None
    assert "signing secret" in new["reason"] and "unsigned" in new["not_sent"]
    assert new["webhook_id"] == unsigned

    text = run("explain", UPDATE, env=env)
    assert text.returncode == 0, text.stderr
    assert "event order.updated v1" in text.stdout
    assert f'routed    webhook {orders} "orders"' in text.stdout
    assert "webhook-signature: v1," in text.stdout
    assert "not sent  webhook" in text.stdout
    assert "nothing was emitted or delivered" in text.stdout

    assert _state(conn) == before


@pytest.mark.parametrize(
    ("statement", "needle"),
    [
        ("DROP TABLE erp.orders", "refuses a DropStmt"),
        ("BEGIN", "refuses a TransactionStmt"),
        (f"{UPDATE}; DELETE FROM erp.orders", "2 statements"),
        ("DELETE FROM whk.outbox", "whk.outbox"),
        ("UPDATE erp.orders SET currency = whk.pause_webhook(1)::text", "whk.pause_webhook"),
        ("UPDATE erp.orders SET", "not valid SQL"),
    ],
)
def test_the_cli_refuses_before_connecting(statement: str, needle: str) -> None:
    with pytest.raises(ExplainRefused) as caught:
        check_statement(statement)
    assert needle in str(caught.value)
    assert caught.value.hint
    done = run("explain", statement, env={"WHK_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert_one_line_error(done, needle)


def test_the_database_refuses_what_syntax_cannot_see(db_url: str, conn: psycopg.Connection[Any]) -> None:
    """A view over a WHK table looks like an ERP table to the parser; whk.explain's catalog check refuses it
    and the CLI shows PostgreSQL's message and hint in one line."""
    install_demo(conn)
    conn.execute("INSERT INTO erp.users (email, name) VALUES ('ana@example.com', 'Ana')")
    conn.execute("CREATE VIEW erp.hooks AS SELECT * FROM whk.whk_01_webhooks")
    check_statement("DELETE FROM erp.hooks")  # the syntax check cannot know
    env = {"WHK_DATABASE_URL": db_url, "WHK_SECRET_KEYS": TEST_SECRET_KEYS}
    done = run("explain", "DELETE FROM erp.hooks", env=env)
    assert_one_line_error(done, "touches WHK's own schema (whk_01_webhooks)")
