"""The SQL control plane as a DBA uses it, through psql: whk.create_consumer, whk.create_webhook,
whk.pause_webhook / whk.resume_webhook, whk.retry_dead; bad input raises with a HINT (never a bare
constraint error); the changes land in the audit trail with the database role as the actor."""

from __future__ import annotations

import subprocess

import psycopg
import pytest

from tests.support.delivery import emit, make_consumer, make_webhook, route, statuses
from tests.support.pg import PgServer
from tests.support.resources import make_delivery

pytestmark = pytest.mark.db

URL = "https://erp.example/hooks/orders"


def psql(
    pg_server: PgServer, db_url: str, script: str, *, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(pg_server.bindir / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", db_url],
        input=script,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert (done.returncode == 0) is ok, done.stderr
    return done


def test_a_dba_creates_a_consumer_and_a_webhook_in_psql(pg_server: PgServer, db_url: str, conn):
    out = psql(
        pg_server,
        db_url,
        f"""
        SELECT whk.create_consumer(name => 'acme', contact_email => 'ops@acme.example') AS consumer \\gset
        SELECT whk.create_webhook(consumer_id => :consumer, name => 'orders', url => '{URL}',
                                  event_types => '{{order.*}}', filter => '$.data.new.total > 100',
                                  headers => '{{"X-Tenant": "acme"}}', max_in_flight => 4) AS hook \\gset
        SELECT :consumer || ' ' || :hook;
        """,
    ).stdout.split()
    consumer, hook = int(out[0]), int(out[1])
    row = conn.execute(
        "SELECT consumer_id, name, url, event_types, filter::text, headers, max_in_flight, status, "
        "needs_secret_since IS NOT NULL FROM whk.whk_01_webhooks WHERE id = %s",
        [hook],
    ).fetchone()
    assert row == (
        consumer,
        "orders",
        URL,
        ["order.*"],
        '($."data"."new"."total" > 100)',
        {"X-Tenant": "acme"},
        4,
        "active",
        True,
    )
    # Never unsigned: the job worker is asked for its secret at commit.
    assert conn.execute(
        "SELECT count(*) FROM whk.pgqueuer WHERE dedupe_key = 'provision_secret:' || %s::text", [hook]
    ).fetchone() == (1,)
    audit = conn.execute(
        "SELECT action, actor, target_type, target_id, consumer_id, after ->> 'name' FROM whk.audit_log "
        "ORDER BY id"
    ).fetchall()
    assert audit == [
        ("consumer.create", "sql:postgres", "consumer", str(consumer), consumer, "acme"),
        ("webhook.create", "sql:postgres", "webhook", str(hook), consumer, "orders"),
    ]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("whk.create_consumer(name => '')", "name must have 1 to 200 characters"),
        ("whk.create_consumer(name => 'taken')", "is taken by another consumer"),
        ("whk.create_consumer(name => 'x', contact_email => 'nobody')", "contact_email must look like"),
        (
            "whk.create_consumer(name => 'x', rate_limit_per_second => 1e-300)",
            "rate_limit_per_second must be",
        ),
        ("whk.create_consumer(name => 'x', metadata => '[]')", "metadata must be a JSON object"),
        (
            "whk.create_webhook(99999, 'n', 'https://a.example', '{a.b}')",
            "consumer_id 99999 is not a consumer",
        ),
        ("whk.create_webhook(%(c)s, 'n', 'ftp://a.example', '{a.b}')", "url must be an http"),
        ("whk.create_webhook(%(c)s, 'n', 'https://a.example', '{}')", "event_types must list 1 to 100"),
        ("whk.create_webhook(%(c)s, 'n', 'https://a.example', '{Order}')", "'Order' is neither a type"),
        (
            "whk.create_webhook(%(c)s, 'n', 'https://a.example', '{a.b}', filter => '$.a ==')",
            "filter is not a SQL/JSON path",
        ),
        (
            "whk.create_webhook(%(c)s, 'n', 'https://a.example', '{a.b}', ordering_key_path => '$$')",
            "ordering_key_path is not a SQL/JSON path",
        ),
        (
            "whk.create_webhook(%(c)s, 'n', 'https://a.example', '{a.b}', "
            'headers => \'{"Webhook-Signature": "x"}\')',
            "headers: names are HTTP tokens",
        ),
        (
            "whk.create_webhook(%(c)s, 'n', 'https://a.example', '{a.b}', headers => '{\"X-A\": \"a\\nb\"}')",
            "headers: names are HTTP tokens",
        ),
        (
            "whk.create_webhook(%(c)s, 'n', 'https://a.example', '{a.b}', timeout_ms => 50)",
            "timeout_ms must be",
        ),
        (
            "whk.create_webhook(%(c)s, 'n', 'https://a.example', '{a.b}', status => 'disabled')",
            "status must be",
        ),
        (
            "whk.create_webhook(%(c)s, 'n', 'https://a.example', '{a.b}', retry_policy => '{\"jitter\": 7}')",
            "retry_policy: ",
        ),
        ("whk.retry_dead(max_rows => 0)", "max_rows must be between 1 and 100000"),
        ("whk.retry_dead(event_type => 'Bad')", "is neither a type"),
        (
            "whk.retry_dead(since => now(), until => now() - interval '1 day')",
            "since must not be after until",
        ),
    ],
)
def test_bad_input_raises_with_a_hint_never_a_bare_constraint_error(conn, call: str, message: str):
    c = make_consumer(conn, "taken")
    with pytest.raises(psycopg.Error) as info:
        conn.execute(f"SELECT {call % {'c': c}}")
    diag = info.value.diag
    assert info.value.sqlstate == "22023", diag.message_primary
    assert message in (diag.message_primary or ""), diag.message_primary
    assert diag.message_hint, "no HINT"
    assert conn.execute("SELECT count(*) FROM whk.whk_01_webhooks").fetchone() == (0,)


def test_psql_shows_the_hint(pg_server: PgServer, db_url: str):
    bad = psql(pg_server, db_url, "SELECT whk.create_consumer(name => '');", ok=False)
    assert "name must have 1 to 200 characters" in bad.stderr and "HINT:" in bad.stderr
    missing = psql(pg_server, db_url, "SELECT whk.resume_webhook(424242);", ok=False)
    assert "no webhook 424242" in missing.stderr and "HINT:" in missing.stderr


def test_pause_and_resume_in_sql_are_audited_with_the_role(conn):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, "http://127.0.0.1:9/h", ["o.*"])
    conn.execute("SELECT whk.pause_webhook(%s)", [hook])
    conn.execute("SELECT whk.resume_webhook(%s)", [hook])
    rows = conn.execute(
        "SELECT action, actor, before ->> 'status', after ->> 'status' FROM whk.audit_log "
        "WHERE target_type = 'webhook' AND action = 'webhook.update' ORDER BY id"
    ).fetchall()
    assert rows == [
        ("webhook.update", "sql:postgres", "active", "paused"),
        ("webhook.update", "sql:postgres", "paused", "active"),
    ]


def test_retry_dead_requeues_only_the_matching_dead_letters(conn):
    c = make_consumer(conn)
    h1 = make_webhook(conn, c, "http://127.0.0.1:9/1", ["o.*"])
    h2 = make_webhook(conn, c, "http://127.0.0.1:9/2", ["o.*"])
    d1 = make_delivery(conn, h1, status="dead", attempts=3)
    make_delivery(conn, h1, status="dead", attempts=3)
    make_delivery(conn, h2, status="dead", attempts=3)
    make_delivery(conn, h1, status="delivered", attempts=1)
    assert conn.execute("SELECT whk.retry_dead(webhook_id => %s, max_rows => 1)", [h1]).fetchone() == (1,)
    assert statuses(conn, h1) == {"pending": 1, "dead": 1, "delivered": 1}
    assert conn.execute("SELECT status FROM whk.whk_03_entregas WHERE id = %s", [d1]).fetchone() == (
        "pending",
    )
    assert conn.execute("SELECT whk.retry_dead(event_type => 'nothing.*')").fetchone() == (0,)
    assert conn.execute("SELECT whk.retry_dead(consumer_id => %s)", [c]).fetchone() == (2,)
    assert statuses(conn, h2) == {"pending": 1}


def test_sql_changes_to_configuration_are_audited_once_and_platform_counters_are_not(conn):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, "http://127.0.0.1:9/h", ["o.*"])
    before = conn.execute("SELECT count(*) FROM whk.audit_log").fetchone()[0]
    # The platform's own bookkeeping (usage counters, firing history, the secret state) is not config.
    emit(conn, "o.created")
    route(conn)
    conn.execute("UPDATE whk.whk_04_assinantes SET usage_deliveries_total = usage_deliveries_total + 5")
    conn.execute("UPDATE whk.whk_02_eventos SET fire_count = fire_count + 1")
    assert conn.execute("SELECT count(*) FROM whk.audit_log").fetchone()[0] == before
    conn.execute("UPDATE whk.whk_01_webhooks SET max_in_flight = 3 WHERE id = %s", [hook])
    conn.execute(
        "UPDATE whk.whk_05_configuracoes SET value = '120' WHERE key = 'monitoring.oldest_pending_warn_s'"
    )
    conn.execute("SELECT whk.register_event_type('invoice.paid', '{\"type\": \"object\"}', 'paid')")
    conn.execute("CREATE TABLE public.t (id int PRIMARY KEY, v text)")
    conn.execute("SELECT whk.enable_capture('public.t', 'thing')")
    conn.execute("SELECT whk.disable_capture('public.t')")
    rows = conn.execute(
        "SELECT action, actor, target_id, before, after FROM whk.audit_log WHERE id > %s ORDER BY id",
        [before],
    ).fetchall()
    actions = [(r[0], r[1], r[2]) for r in rows]
    assert actions == [
        ("webhook.update", "sql:postgres", str(hook)),
        ("setting.update", "sql:postgres", "monitoring.oldest_pending_warn_s"),
        ("event_type.register", "sql:postgres", "invoice.paid"),
        # enable_capture registers the table's event types, then records the capture
        *[("event_type.register", "sql:postgres", f"thing.{op}") for op in ("deleted", "created", "updated")],
        ("capture.enable", "sql:postgres", "public.t"),
        ("capture.disable", "sql:postgres", "public.t"),
    ]
    assert rows[0][3]["max_in_flight"] == 10 and rows[0][4]["max_in_flight"] == 3
    assert rows[1][4]["value"] == 120


def test_a_role_audits_under_its_own_name_and_the_marker_is_ignored_for_other_roles(conn):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, "http://127.0.0.1:9/h", ["o.*"])
    conn.execute("DROP ROLE IF EXISTS whk_test_dba")
    conn.execute("CREATE ROLE whk_test_dba")
    conn.execute("GRANT USAGE ON SCHEMA whk TO whk_test_dba")
    conn.execute("GRANT SELECT, UPDATE ON whk.whk_01_webhooks TO whk_test_dba")
    try:
        with conn.transaction():
            conn.execute("SET LOCAL ROLE whk_test_dba")
            # A role that is not a WHK process cannot switch its audit off by claiming to be one.
            conn.execute("SELECT set_config('whk.audited_by', 'api', true)")
            conn.execute("UPDATE whk.whk_01_webhooks SET name = 'renamed' WHERE id = %s", [hook])
        with conn.transaction():
            conn.execute("SET LOCAL ROLE whk_app")
            conn.execute("SELECT set_config('whk.audited_by', 'api', true)")
            conn.execute("UPDATE whk.whk_01_webhooks SET name = 'by the api' WHERE id = %s", [hook])
        rows = conn.execute(
            "SELECT actor, after ->> 'name' FROM whk.audit_log WHERE action = 'webhook.update' ORDER BY id"
        ).fetchall()
        assert rows == [("sql:postgres/whk_test_dba", "renamed")]  # the API writes its own row
    finally:
        conn.execute("REVOKE ALL ON whk.whk_01_webhooks FROM whk_test_dba")
        conn.execute("REVOKE USAGE ON SCHEMA whk FROM whk_test_dba")
        conn.execute("DROP ROLE whk_test_dba")


def test_the_audit_trail_never_holds_an_outbound_credential(conn):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, "http://127.0.0.1:9/h", ["o.*"])
    conn.execute("UPDATE whk.whk_01_webhooks SET auth_credential_enc = '\\x0102' WHERE id = %s", [hook])
    row = conn.execute(
        "SELECT after ->> 'auth_credential_enc', after::text FROM whk.audit_log "
        "WHERE action = 'webhook.update' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert row is not None and row[0] == "[redacted]" and "0102" not in row[1]
