"""Every role a WHK process uses may at most read and append audit rows, never change or remove them;
each role has what its process needs, also on tables created after it; processes refuse (production) or
warn (development) when connected as a superuser or the owner of WHK's tables."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from api.audit import REDACTED, redact
from tests.support.api_platform import admin_key, bearer, client, settings_for
from whk.dbroles import RoleFacts, acheck_role, check_role, privilege_problem
from whk.errors import PrivilegedDatabaseRole
from whk.settings import load_settings

ROLES = ("whk_app", "whk_dispatcher", "whk_readonly")

pytestmark = pytest.mark.db


def _as_app(conn):
    # As the API connects: its role, and the marker that leaves auditing its changes to the API itself.
    conn.execute("SET ROLE whk_app")
    conn.execute("SET whk.audited_by = 'api'")


def test_app_role_cannot_update_delete_or_truncate_audit_rows(conn):
    conn.execute(
        "INSERT INTO whk.audit_log (actor, action, target_type, target_id) VALUES ('t', 'x.y', 'thing', '1')"
    )
    _as_app(conn)
    conn.execute(
        "INSERT INTO whk.audit_log (actor, action, target_type, target_id) VALUES ('t', 'x.z', 'thing', '2')"
    )
    assert conn.execute("SELECT count(*) FROM whk.audit_log").fetchone()[0] == 2
    for stmt in (
        "UPDATE whk.audit_log SET actor = 'forged'",
        "DELETE FROM whk.audit_log",
        "TRUNCATE whk.audit_log",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(stmt)
    # The role can still work with ordinary tables.
    conn.execute("INSERT INTO whk.whk_04_assinantes (name) VALUES ('x')")
    conn.execute("UPDATE whk.whk_04_assinantes SET description = 'y'")
    conn.execute("RESET ROLE")
    assert conn.execute("SELECT actor FROM whk.audit_log ORDER BY id").fetchall() == [("t",), ("t",)]


@pytest.mark.parametrize("role", ROLES)
def test_no_process_role_can_update_delete_or_truncate_audit_rows(conn, role):
    conn.execute(
        "INSERT INTO whk.audit_log (actor, action, target_type, target_id) VALUES ('t', 'x.y', 'thing', '1')"
    )
    conn.execute(f"SET ROLE {role}")
    for stmt in (
        "UPDATE whk.audit_log SET actor = 'forged'",
        "DELETE FROM whk.audit_log",
        "TRUNCATE whk.audit_log",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(stmt)
    conn.execute("RESET ROLE")
    assert conn.execute("SELECT actor FROM whk.audit_log").fetchall() == [("t",)]
    for privilege in ("UPDATE", "DELETE", "TRUNCATE"):
        held = conn.execute(
            "SELECT has_table_privilege(%s, 'whk.audit_log', %s)", (role, privilege)
        ).fetchone()
        assert held == (False,), (role, privilege)


def test_dispatcher_and_readonly_roles(conn):
    # The dispatcher appends audit rows (a webhook it disables) but never reads the API's tables.
    conn.execute("SET ROLE whk_dispatcher")
    conn.execute(
        "INSERT INTO whk.audit_log (actor, action, target_type, target_id) "
        "VALUES ('d', 'webhook.disabled', 'webhook', '1')"
    )
    for table in ("audit_log", "api_keys", "api_rate_limits", "mock_requests"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT 1 FROM whk.{table} LIMIT 1")
    conn.execute("SELECT whk.dispatcher_set_idle('nobody', true)")
    conn.execute("RESET ROLE")
    # Read-only reads everything WHK keeps, writes nothing.
    conn.execute("SET ROLE whk_readonly")
    assert conn.execute("SELECT count(*) FROM whk.audit_log").fetchone() == (1,)
    conn.execute("SELECT count(*) FROM whk.api_keys")
    for stmt in (
        "INSERT INTO whk.whk_04_assinantes (name) VALUES ('ro')",
        "INSERT INTO whk.audit_log (actor, action, target_type) VALUES ('ro', 'x.y', 'thing')",
        "UPDATE whk.whk_05_configuracoes SET value = value",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(stmt)
    conn.execute("RESET ROLE")


def test_tables_created_by_later_migrations_get_the_same_grants(conn):
    """Tables added after the baseline get the default privileges of the migrating role."""
    conn.execute("CREATE TABLE whk.added_later (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text)")
    rows = conn.execute(
        "SELECT r, p, has_table_privilege(r, 'whk.added_later', p) FROM unnest(%s::text[]) r, "
        "unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) p",
        (list(ROLES),),
    ).fetchall()
    held = {(r, p) for r, p, ok in rows if ok}
    expected = {
        (r, p) for r in ("whk_app", "whk_dispatcher") for p in ("SELECT", "INSERT", "UPDATE", "DELETE")
    }
    assert held == expected | {("whk_readonly", "SELECT")}


def test_process_roles_are_not_privileged(conn):
    for role in ROLES:
        conn.execute(f"SET ROLE {role}")
        facts = check_role(conn, load_settings({"WHK_ENV": "production"}), "api", logging.getLogger("t"))
        assert facts == RoleFacts(role=role, superuser=False, owner=False)
        conn.execute("RESET ROLE")


def test_privileged_connection_warns_in_development_and_refuses_in_production(conn, caplog):
    log = logging.getLogger("whk.test")
    dev = load_settings({"WHK_ENV": "development"})
    with caplog.at_level(logging.WARNING, logger="whk.test"):
        facts = check_role(conn, dev, "dispatcher", log)
    assert facts.superuser
    assert "a superuser" in caplog.text
    assert "WHK_DISPATCHER_DB_ROLE=whk_dispatcher" in caplog.text
    prod = load_settings({"WHK_ENV": "production", "WHK_SECRET_KEYS": "k1:" + "A" * 43 + "="})
    with pytest.raises(PrivilegedDatabaseRole, match=r"refuses to start.*superuser"):
        check_role(conn, prod, "api", log)
    acknowledged = load_settings(
        {
            "WHK_ENV": "production",
            "WHK_SECRET_KEYS": "k1:" + "A" * 43 + "=",
            "WHK_ALLOW_PRIVILEGED_DB_ROLE": "true",
        }
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="whk.test"):
        check_role(conn, acknowledged, "api", log)
    assert "accepted: WHK_ALLOW_PRIVILEGED_DB_ROLE=true" in caplog.text


def test_the_owner_of_the_tables_is_privileged_too(conn):
    conn.execute("CREATE ROLE whk_test_owner NOLOGIN")
    try:
        conn.execute("GRANT whk_test_owner TO whk_readonly")
        conn.execute("ALTER TABLE whk.schema_migrations OWNER TO whk_test_owner")
        conn.execute("SET ROLE whk_readonly")
        facts = check_role(conn, load_settings({}), "api", logging.getLogger("t"))
        assert facts == RoleFacts(role="whk_readonly", superuser=False, owner=True)
        assert "owner of WHK's tables" in (privilege_problem(facts) or "")
    finally:
        conn.execute("RESET ROLE")
        conn.execute("ALTER TABLE whk.schema_migrations OWNER TO CURRENT_USER")
        conn.execute("REVOKE whk_test_owner FROM whk_readonly")
        conn.execute("DROP ROLE whk_test_owner")


def test_dispatcher_refuses_a_superuser_dsn_in_production(db_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    env.update(
        {"WHK_DATABASE_URL": db_url, "WHK_ENV": "production", "WHK_SECRET_KEYS": "k1:" + "A" * 43 + "="}
    )
    whk = str(Path(sys.executable).with_name("whk"))
    proc = subprocess.run([whk, "dispatcher"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "refuses to start: it is connected as" in proc.stderr
    assert "WHK_ALLOW_PRIVILEGED_DB_ROLE=true" in proc.stderr


async def test_api_refuses_a_superuser_dsn_in_production(db_url, aconn):
    prod = load_settings(
        {"WHK_DATABASE_URL": db_url, "WHK_ENV": "production", "WHK_SECRET_KEYS": "k1:" + "A" * 43 + "="}
    )
    with pytest.raises(PrivilegedDatabaseRole):
        await acheck_role(aconn, prod, "api", logging.getLogger("t"))
    with pytest.raises(BaseException) as caught:
        async with client(prod):
            pass
    assert "refuses to start" in repr(caught.value) + str(getattr(caught.value, "exceptions", ""))
    # The same DSN with WHK_API_DB_ROLE=whk_app starts.
    async with client(load_settings({**_prod_env(db_url), "WHK_API_DB_ROLE": "whk_app"})) as c:
        assert (await c.get("/api/whk/monitoring/health")).status_code == 200


def _prod_env(db_url: str) -> dict[str, str]:
    return {"WHK_DATABASE_URL": db_url, "WHK_ENV": "production", "WHK_SECRET_KEYS": "k1:" + "A" * 43 + "="}


def test_app_role_grants_cover_every_whk_table(conn):
    missing = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'whk' AND c.relkind IN ('r', 'p', 'u') AND c.relname <> 'audit_log' "
        "AND c.relname NOT LIKE 'pgqueuer%%' "
        "AND NOT has_table_privilege('whk_app', c.oid, 'SELECT, INSERT, UPDATE, DELETE')"
    ).fetchall()
    assert missing == []


async def test_api_runs_as_the_app_role(db_url, conn):
    key = admin_key(conn)
    settings = settings_for(db_url, WHK_API_DB_ROLE="whk_app")
    async with client(settings) as c:
        r = await c.post("/api/whk/api-keys", headers=bearer(key), json={"name": "as app role"})
        assert r.status_code == 201, r.text
        assert (await c.get("/api/whk/api-keys", headers=bearer(key))).status_code == 200
    actor = conn.execute(
        "SELECT actor FROM whk.audit_log WHERE action = 'api_key.create' ORDER BY id DESC"
    ).fetchone()
    assert actor[0].startswith("apikey:")


def test_redact_removes_secrets():
    doc = {
        "name": "hook",
        "secret": "whsec_abc",
        "auth": {"password": "p", "api_key": "k", "header": "X-Auth"},
        "note": "rotated to whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw today",
        "key": "whk_abcdefghijkl_0123456789abcdefghij",
        "headers": {"Authorization": "Bearer xyz"},
        "list": [{"token": "t"}, "Bearer abc.def"],
        "secret_enc": b"\x01\x02",
        "blob": b"\x00",
        "secret_none": None,
    }
    out = redact(doc)
    text = str(out)
    for leaked in ("whsec_abc", "whsec_MfKQ", "'p'", "'k'", "whk_abcdefghijkl", "xyz", "abc.def", "\\x01"):
        assert leaked not in text, leaked
    assert out["name"] == "hook"
    assert out["auth"]["header"] == "X-Auth"
    assert out["secret"] == REDACTED
    assert out["secret_none"] is None
