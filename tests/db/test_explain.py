"""whk.explain: one ERP statement run in a savepoint that is always rolled back; the events it would emit,
the webhooks each would reach (with the request) and why the others would not; unsafe statements refused
with a HINT; nothing left behind."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.db.capture_support import install_demo
from tests.support.delivery import make_consumer, make_webhook, route
from tests.support.pg import PgServer
from tests.support.wait import wait_for

pytestmark = pytest.mark.db

UPDATE = "UPDATE erp.orders SET status = 'paid' WHERE id = 1"
COLUMNS = (
    "event_type, webhook_name, routed, reason, method, url, headers ->> 'webhook-id', body::jsonb, signature"
)


def _counts(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM whk.outbox), (SELECT count(*) FROM whk.whk_03_entregas), "
        "(SELECT count(*) FROM whk.pgqueuer), (SELECT jsonb_agg(o ORDER BY o.id) FROM erp.orders o)"
    ).fetchone()
    assert row is not None
    return tuple(row)


@pytest.fixture
def erp(conn: psycopg.Connection[Any]) -> dict[str, int]:
    install_demo(conn)
    conn.execute("INSERT INTO erp.users (email, name) VALUES ('ana@example.com', 'Ana')")
    conn.execute("INSERT INTO erp.orders (user_id, total) VALUES (1, 250)")
    consumer = make_consumer(conn, "acme")
    other = make_consumer(conn, "gone", status="disabled")
    resting = make_consumer(conn, "resting", status="suspended")
    hooks = {
        "orders": make_webhook(conn, consumer, "https://acme.example/orders", ["order.*"], name="orders"),
        "big": make_webhook(
            conn,
            consumer,
            "https://acme.example/big",
            ["order.updated"],
            name="big",
            filter="$.data.new.total > 1000",
        ),
        "users": make_webhook(conn, consumer, "https://acme.example/users", ["user.*"], name="users"),
        "v2": make_webhook(
            conn, consumer, "https://acme.example/v2", ["order.*"], name="v2", payload_version=2
        ),
        "paused": make_webhook(
            conn, consumer, "https://acme.example/paused", ["*"], name="paused", status="paused"
        ),
        "disabled": make_webhook(
            conn, consumer, "https://acme.example/off", ["*"], name="disabled", status="disabled"
        ),
        "consumer_off": make_webhook(conn, other, "https://gone.example/", ["*"], name="consumer_off"),
        "suspended": make_webhook(conn, resting, "https://resting.example/", ["*"], name="suspended"),
        "delayed": make_webhook(
            conn,
            consumer,
            "https://acme.example/later",
            ["order.*"],
            name="delayed",
            delivery_mode="delayed",
            delay_seconds=300,
        ),
        "batched": make_webhook(
            conn,
            consumer,
            "https://acme.example/batch",
            ["order.updated"],
            name="batched",
            delivery_mode="batch",
            batch_size=50,
        ),
        "broke_routing": make_webhook(
            conn,
            consumer,
            "https://acme.example/broken",
            ["*"],
            name="broke_routing",
            quarantined_at="now",
            quarantine_stage="route",
            quarantine_reason="filter raised 22012",
        ),
        "broke_claim": make_webhook(
            conn,
            consumer,
            "https://acme.example/claim",
            ["*"],
            name="broke_claim",
            quarantined_at="now",
            quarantine_stage="claim",
            quarantine_reason="claim raised 22003",
        ),
    }
    deleted = make_webhook(conn, consumer, "https://acme.example/deleted", ["*"], name="deleted")
    conn.execute("UPDATE whk.whk_01_webhooks SET deleted_at = now() WHERE id = %s", [deleted])
    conn.execute("TRUNCATE whk.outbox")
    conn.execute("DELETE FROM whk.pgqueuer")
    return hooks


def test_explain_shows_the_event_who_gets_it_and_why_not(
    conn: psycopg.Connection[Any], erp: dict[str, int]
) -> None:
    before = _counts(conn)
    rows = conn.execute(f"SELECT {COLUMNS} FROM whk.explain(%s)", [UPDATE]).fetchall()
    by_hook = {r[1]: r for r in rows}
    assert {r[0] for r in rows} == {"order.updated"}
    assert set(by_hook) == set(erp)
    for name in ("orders", "paused"):
        assert by_hook[name][2] is True, by_hook[name]
    assert by_hook["orders"][3] is None
    assert by_hook["paused"][3].startswith("held: the webhook is paused")
    assert by_hook["orders"][4:6] == ("POST", "https://acme.example/orders")
    body = by_hook["orders"][7]
    assert body["type"] == "order.updated"
    assert body["data"]["new"]["status"] == "paid"
    assert body["data"]["changed"] == ["status"]
    assert by_hook["orders"][6].startswith("msg_")
    assert by_hook["orders"][8] is None  # the signature needs the key: the CLI fills it
    reasons = {name: r[3] for name, r in by_hook.items() if not r[2]}
    assert "filter" in reasons["big"]
    assert "not among its event types" in reasons["users"]
    # Pinned to v2 with no transform from v1: routed, parked with the reason (never silently dropped).
    assert by_hook["v2"][2] is True and by_hook["v2"][3].startswith("parked: no transform"), by_hook["v2"]
    assert by_hook["v2"][7] is None
    assert reasons["disabled"] == "the webhook is disabled"
    assert "is disabled" in reasons["consumer_off"] and "consumer" in reasons["consumer_off"]
    assert by_hook["suspended"][2] is True
    assert by_hook["suspended"][3].startswith("held: the consumer is suspended")
    assert by_hook["delayed"][2] is True and by_hook["delayed"][3].startswith("delayed: due at")
    assert by_hook["broke_claim"][2] is True
    assert by_hook["batched"][3].startswith("batched: sent in a JSON array of up to 50 events")
    assert by_hook["broke_claim"][3] == "held: the webhook is quarantined (claim): claim raised 22003"
    assert (
        reasons["broke_routing"] == "the webhook is quarantined: its data broke routing (filter raised 22012)"
    )
    assert _counts(conn) == before


def test_the_routed_set_is_what_routing_creates(conn: psycopg.Connection[Any], erp: dict[str, int]) -> None:
    """Run the statement for real and route it: whk.route_and_take creates deliveries for exactly the
    webhooks whk.explain said were routed, with the body whk.explain showed (bar the envelope's time; none
    for the one parked for want of a transform)."""
    explained = conn.execute(
        "SELECT webhook_id, body::jsonb FROM whk.explain(%s) WHERE routed ORDER BY webhook_id", [UPDATE]
    ).fetchall()
    conn.execute(UPDATE)
    route(conn)
    delivered = conn.execute(
        "SELECT d.webhook_id, CASE WHEN d.render_problem IS NULL "
        "THEN coalesce(d.payload, whk.event_envelope(o)) END FROM whk.whk_03_entregas d "
        "JOIN whk.outbox o ON o.id = d.outbox_id AND o.created_at = d.event_created_at ORDER BY d.webhook_id"
    ).fetchall()
    assert [r[0] for r in delivered] == [r[0] for r in explained]
    for (_, shown), (_, sent) in zip(explained, delivered, strict=True):
        if sent is None:  # parked for want of a transform: no body for its major yet, in both
            assert shown is None
            continue
        assert {k: v for k, v in shown.items() if k != "timestamp"} == {
            k: v for k, v in sent.items() if k != "timestamp"
        }


def test_merge_is_explained(conn: psycopg.Connection[Any], erp: dict[str, int]) -> None:
    rows = conn.execute(
        "SELECT DISTINCT event_type FROM whk.explain(%s)",
        [
            "MERGE INTO erp.orders o USING (VALUES (1)) AS v(id) ON o.id = v.id "
            "WHEN MATCHED THEN UPDATE SET status = 'paid'"
        ],
    ).fetchall()
    assert rows == [("order.updated",)]


def test_an_insert_explained_leaves_no_row_but_uses_a_sequence_value(
    conn: psycopg.Connection[Any], erp: dict[str, int]
) -> None:
    before = _counts(conn)
    rows = conn.execute(
        "SELECT event_type, webhook_name, routed, body::jsonb FROM whk.explain(%s) WHERE routed",
        ["INSERT INTO erp.orders (user_id, total) VALUES (1, 5000)"],
    ).fetchall()
    assert {r[0] for r in rows} == {"order.created"}
    assert sorted(r[1] for r in rows) == ["broke_claim", "delayed", "orders", "paused", "suspended", "v2"]
    assert rows[0][3]["data"]["new"]["total"] == 5000
    assert _counts(conn) == before
    # Sequences are not transactional: the explained INSERT took order id 2, the next real one gets 3.
    row = conn.execute("INSERT INTO erp.orders (user_id) VALUES (1) RETURNING id").fetchone()
    assert row == (3,)


def test_events_written_earlier_in_the_callers_transaction_are_neither_shown_nor_undone(
    conn: psycopg.Connection[Any], erp: dict[str, int]
) -> None:
    with conn.transaction():
        conn.execute("UPDATE erp.orders SET total = 260 WHERE id = 1")
        rows = conn.execute(
            "SELECT event_id, body::jsonb FROM whk.explain(%s) WHERE webhook_name = 'orders'", [UPDATE]
        ).fetchall()
        assert len(rows) == 1
        assert rows[0][1]["data"]["changed"] == ["status"]
        mine = conn.execute("SELECT event_type, data ->> 'total' FROM whk.outbox").fetchall()
        assert mine == [("order.updated", "260.00")]
    assert conn.execute("SELECT status, total FROM erp.orders WHERE id = 1").fetchone() == ("pending", 260)


def test_events_a_deferred_trigger_writes_at_commit_are_shown(
    conn: psycopg.Connection[Any], erp: dict[str, int]
) -> None:
    conn.execute("SELECT whk.register_event_type('note.added', '{\"type\": \"object\"}', 'a note')")
    conn.execute(
        """
        CREATE TABLE erp.notes (id int PRIMARY KEY, body text);
        CREATE FUNCTION erp.note_event() RETURNS trigger LANGUAGE plpgsql AS $f$
        BEGIN PERFORM whk.emit('note.added', jsonb_build_object('id', NEW.id)); RETURN NULL; END $f$;
        CREATE CONSTRAINT TRIGGER note_event AFTER INSERT ON erp.notes DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION erp.note_event();
        """
    )
    rows = conn.execute(
        "SELECT event_type, body::jsonb -> 'data' "
        "FROM whk.explain('INSERT INTO erp.notes VALUES (7, ''x'')') WHERE webhook_name = 'paused'"
    ).fetchall()
    assert rows == [("note.added", {"id": 7})]
    assert conn.execute("SELECT count(*) FROM erp.notes").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM whk.outbox").fetchone() == (0,)


def test_an_event_without_any_webhook_is_still_shown(conn: psycopg.Connection[Any]) -> None:
    install_demo(conn)
    conn.execute("INSERT INTO erp.users (email, name) VALUES ('ana@example.com', 'Ana')")
    rows = conn.execute(
        "SELECT event_type, webhook_id, routed, reason FROM whk.explain("
        "'UPDATE erp.users SET name = ''Ana Maria'' WHERE id = 1')"
    ).fetchall()
    assert rows == [("user.updated", None, False, "no webhook is configured")]


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("DROP TABLE erp.orders", "refuses this statement"),
        ("ALTER TABLE erp.orders ADD COLUMN note text", "refuses this statement"),
        ("CREATE TABLE erp.scratch (id int)", "refuses this statement"),
        ("COMMIT", "refuses this statement"),
        ("ROLLBACK", "refuses this statement"),
        ("VACUUM erp.orders", "refuses this statement"),
        (f"{UPDATE}; DELETE FROM erp.orders", "refuses this statement"),
        (f"{UPDATE}; COMMIT", "refuses this statement"),
        ("SELECT * FROM erp.orders", "not an INSERT, UPDATE, DELETE or MERGE"),
        ("CREATE TABLE erp.copy AS SELECT * FROM erp.orders", "not an INSERT, UPDATE, DELETE or MERGE"),
        ("DELETE FROM whk.outbox", "touches WHK's own schema (outbox"),
        ("UPDATE whk.whk_01_webhooks SET status = 'paused'", "(whk_01_webhooks)"),
        (
            "UPDATE erp.orders SET currency = (SELECT name FROM whk.whk_04_assinantes LIMIT 1)",
            "(whk_04_assinantes)",
        ),
        ("UPDATE erp.orders SET currency = whk.pause_webhook(1)::text", "(whk.pause_webhook)"),
        ("UPDATE erp.orders SET currency = 'x' FROM erp.consumers c WHERE c.id = 1", "(whk_04_assinantes)"),
        ("", "needs a statement"),
    ],
)
def test_unsafe_statements_are_refused_with_a_hint(
    conn: psycopg.Connection[Any], erp: dict[str, int], statement: str, message: str
) -> None:
    conn.execute("CREATE VIEW erp.consumers AS SELECT * FROM whk.whk_04_assinantes")
    before = _counts(conn)
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("SELECT * FROM whk.explain(%s)", [statement])
    assert message in caught.value.diag.message_primary, caught.value.diag.message_primary
    assert caught.value.diag.message_hint
    assert _counts(conn) == before
    assert conn.execute("SELECT count(*) FROM pg_class WHERE relname IN ('scratch', 'copy')").fetchone() == (
        0,
    )
    assert conn.execute("SELECT status FROM whk.whk_01_webhooks WHERE id = 1").fetchone() == ("active",)


def test_whk_objects_found_through_the_search_path_are_not_resolved(
    conn: psycopg.Connection[Any], erp: dict[str, int]
) -> None:
    conn.execute("SET search_path = erp, whk, public")
    with pytest.raises(psycopg.errors.UndefinedFunction):
        conn.execute("SELECT * FROM whk.explain('UPDATE orders SET currency = pause_webhook(1)::text')")
    conn.execute("SET search_path = erp, whk, public")
    n = conn.execute("SELECT count(*) FROM whk.explain('UPDATE orders SET status = ''paid'' WHERE id = 1')")
    assert n.fetchone() == (len(erp),)
    # The caller's search_path is back as it was.
    assert conn.execute("SHOW search_path").fetchone() == ("erp, whk, public",)


def test_routing_rules_are_inlined_into_the_fan_out(conn: psycopg.Connection[Any]) -> None:
    """route_and_take and explain share whk.route_target_open / whk.route_payload_matches: the planner
    inlines both, so the fan-out's plan sees the plain conditions (as before they were functions)."""
    plan = "\n".join(
        r[0]
        for r in conn.execute(
            "EXPLAIN (VERBOSE) SELECT w.id FROM whk.whk_01_webhooks w JOIN whk.whk_04_assinantes a "
            "ON a.id = w.consumer_id "
            "AND whk.route_target_open(w.status, w.deleted_at, w.quarantine_stage, a.status) "
            "WHERE whk.route_payload_matches(w.filter, '{}'::jsonb, NULL)"
        ).fetchall()
    )
    assert "route_target_open" not in plan
    assert "route_payload_matches" not in plan
    assert "{active,paused}" in plan
    assert "{active,suspended}" in plan
    assert "@@" in plan


def _doc_example() -> str:
    """The example of docs/dba.md's whk.explain section, as written there."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "dba.md").read_text("utf-8")
    section = text[text.index("### `whk.explain`") :]
    block = section[section.index("```sql\n") + 7 :]
    return block[: block.index("```")]


def test_a_dba_explains_in_psql(
    pg_server: PgServer, db_url: str, conn: psycopg.Connection[Any], erp: dict[str, int]
) -> None:
    example = _doc_example()
    assert "WHERE id = 42$$" in example
    conn.execute(  # the docs' order
        "INSERT INTO erp.orders (id, user_id, total) OVERRIDING SYSTEM VALUE VALUES (42, 1, 250)"
    )
    before = _counts(conn)
    docs_run = subprocess.run(
        [str(pg_server.bindir / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", db_url],
        input=example,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert docs_run.returncode == 0, docs_run.stderr
    assert "order.updated|orders|t||POST|https://acme.example/orders|" in docs_run.stdout
    done = subprocess.run(
        [str(pg_server.bindir / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", db_url],
        input="SELECT webhook_name, routed, coalesce(reason, '-') FROM "
        "whk.explain($$UPDATE erp.orders SET status = 'paid' WHERE id = 42$$) ORDER BY webhook_name;\n",
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "orders|t|-" in lines
    assert any(line.startswith("big|f|its filter") for line in lines)
    refused = subprocess.run(
        [str(pg_server.bindir / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", db_url],
        input="SELECT * FROM whk.explain($$DROP TABLE erp.orders$$);\n",
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert refused.returncode != 0
    assert "refuses this statement" in refused.stderr
    assert "HINT:  whk.explain runs ONE INSERT, UPDATE, DELETE or MERGE" in refused.stderr
    assert _counts(conn) == before


def test_an_event_another_session_commits_meanwhile_is_not_shown(
    db_url: str, conn: psycopg.Connection[Any], erp: dict[str, int]
) -> None:
    """The explained statement waits on a row lock while another session commits its own event: that
    event becomes visible to whk.explain's later statements, yet only the explained one is shown."""
    conn.execute("INSERT INTO erp.orders (user_id, total) VALUES (1, 10)")  # order 2
    conn.execute("TRUNCATE whk.outbox")
    shown: list[tuple[Any, ...]] = []
    failed: list[BaseException] = []

    def explain_in_another_session() -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as mine:
                shown.extend(
                    mine.execute("SELECT DISTINCT event_type, event_key FROM whk.explain(%s)", [UPDATE])
                )
        except BaseException as exc:  # reported by the main thread
            failed.append(exc)

    with psycopg.connect(db_url) as other:
        other.execute("SELECT 1 FROM erp.orders WHERE id = 1 FOR UPDATE")
        other.execute("UPDATE erp.orders SET total = 11 WHERE id = 2")  # its own order.updated
        worker = threading.Thread(target=explain_in_another_session)
        worker.start()
        wait_for(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE '%whk.explain%'"
                ).fetchone()
                == (1,)
            ),
            30,
            "whk.explain to wait for the row lock",
        )
        other.commit()
        worker.join(60)
    assert not worker.is_alive()
    assert not failed, failed
    assert shown == [("order.updated", "1")]
    assert conn.execute("SELECT event_key FROM whk.outbox").fetchall() == [("2",)]
