"""The application role may read and append audit rows, never change or remove them."""

import psycopg
import pytest

from api.audit import REDACTED, redact
from tests.support.api_platform import admin_key, bearer, client, settings_for

pytestmark = pytest.mark.db


def _as_app(conn):
    conn.execute("SET ROLE whk_app")


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
