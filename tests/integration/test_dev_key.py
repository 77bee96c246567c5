"""`whk up`'s development admin key: each start revokes the earlier ones, so one is valid at a time."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from api.keys import create_api_key, rotate_development_key

pytestmark = pytest.mark.db

NAME = "make-up development key"


def test_rotation_keeps_one_valid_key_and_audits_the_revocations(conn: psycopg.Connection[Any]):
    other = create_api_key(conn, admin=True, consumer_id=None, name="ops admin")
    first, revoked = rotate_development_key(conn, name=NAME)
    assert revoked == 0
    # An earlier key made by another OS user is revoked too.
    conn.execute("UPDATE whk.api_keys SET created_by = 'cli:someone-else' WHERE name = %s", (NAME,))
    second, revoked = rotate_development_key(conn, name=NAME)
    assert revoked == 1 and second != first
    third, revoked = rotate_development_key(conn, name=NAME)
    assert revoked == 1
    valid = conn.execute(
        "SELECT prefix FROM whk.api_keys WHERE name = %s AND revoked_at IS NULL", (NAME,)
    ).fetchall()
    assert valid == [(third.split("_")[1],)]
    assert conn.execute("SELECT count(*) FROM whk.api_keys WHERE name = %s", (NAME,)).fetchone() == (3,)
    # Keys with other names are never touched.
    assert conn.execute(
        "SELECT revoked_at IS NULL FROM whk.api_keys WHERE prefix = %s", (other.split("_")[1],)
    ).fetchone() == (True,)
    audits = conn.execute(
        "SELECT count(*) FILTER (WHERE action = 'api_key.revoke'), "
        "count(*) FILTER (WHERE action = 'api_key.create') FROM whk.audit_log WHERE after->>'name' = %s",
        (NAME,),
    ).fetchone()
    assert audits == (2, 3)
