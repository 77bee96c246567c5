"""Least privilege, in psql: the ERP's own role (rights on its ERP schema only) needs no grant on any WHK
table for capture to work, and cannot read the signing secrets."""

from __future__ import annotations

import subprocess
import uuid
from typing import Any

import psycopg
import pytest

from tests.support.delivery import make_consumer, make_webhook
from tests.support.pg import PgServer

pytestmark = pytest.mark.db


def psql(pg_server: PgServer, db_url: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(pg_server.bindir / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", db_url],
        input=script,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_erp_role_captures_without_whk_grants_and_cannot_read_secrets(
    pg_server: PgServer, db_url: str, conn: psycopg.Connection[Any]
):
    role = f"erp_{uuid.uuid4().hex[:8]}"
    c = make_consumer(conn)
    make_webhook(conn, c, "http://127.0.0.1:9/h", ["shop.*"])  # with a signing secret
    setup = psql(
        pg_server,
        db_url,
        f"""
        CREATE ROLE {role} NOLOGIN;
        CREATE SCHEMA shop AUTHORIZATION {role};
        SET ROLE {role};
        CREATE TABLE shop.orders (id bigint PRIMARY KEY, total numeric NOT NULL);
        RESET ROLE;
        -- the DBA enables capture; the ERP role gets nothing in schema whk
        SELECT whk.enable_capture('shop.orders', 'shop.order');
        """,
    )
    assert setup.returncode == 0, setup.stderr
    try:
        grants = conn.execute(
            "SELECT count(*) FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'whk' AND c.relkind IN ('r', 'p', 'v', 'S') "
            "AND (has_table_privilege(%(r)s, c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE'))",
            {"r": role},
        ).fetchone()
        assert grants == (0,)
        assert conn.execute("SELECT has_schema_privilege(%s, 'whk', 'USAGE')", [role]).fetchone() == (False,)

        erp = psql(
            pg_server,
            db_url,
            f"""
            SET ROLE {role};
            INSERT INTO shop.orders VALUES (1, 10), (2, 20);
            UPDATE shop.orders SET total = total + 1 WHERE id = 1;
            DELETE FROM shop.orders WHERE id = 2;
            """,
        )
        assert erp.returncode == 0, erp.stderr
        events = conn.execute("SELECT event_type FROM whk.outbox ORDER BY id").fetchall()
        assert [e[0] for e in events] == [
            "shop.order.created",
            "shop.order.created",
            "shop.order.updated",
            "shop.order.deleted",
        ]

        for forbidden in (
            "SELECT secret_enc FROM whk.webhook_secrets",
            "SELECT * FROM whk.outbox",
            "SELECT auth_credential_enc FROM whk.whk_01_webhooks",
        ):
            denied = psql(pg_server, db_url, f"SET ROLE {role};\n{forbidden};")
            assert denied.returncode != 0
            assert "permission denied" in denied.stderr, denied.stderr
    finally:
        conn.execute("SELECT whk.disable_capture('shop.orders')")
        conn.execute("DROP SCHEMA shop CASCADE")
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")
