"""Migration 0021 fast_presence: every stored schema version is recompiled with the in-place presence test."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from whk import migrate

pytestmark = pytest.mark.db

SCHEMA = {
    "type": "object",
    "required": ["id"],
    "properties": {"id": {"type": "integer"}, "note": {"type": "string"}},
}


def _paths(conn: psycopg.Connection[Any]) -> dict[str, str]:
    rows = conn.execute(
        "SELECT e.name || '@' || v.major || '.' || v.minor, v.check_path::text"
        " FROM whk.whk_02_eventos_versoes v JOIN whk.whk_02_eventos e ON e.id = v.event_type_id"
    ).fetchall()
    return {str(k): str(p) for k, p in rows}


def test_stored_versions_are_recompiled_and_keep_their_verdicts(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrate.migrate(conn, target=20)
        conn.execute("SELECT whk.register_event_type('inv.counted', %s)", (Jsonb(SCHEMA),))
        before = _paths(conn)
        # Before: presence was tested by listing every member with .keyvalue() and comparing its key.
        presence = '@."key" == '
        assert presence in before["inv.counted@1.0"]

        migrate.migrate(conn)

        after = _paths(conn)
        assert after.keys() == before.keys()
        # (additionalProperties: false still lists the members once, comparing with `!=`.)
        assert [k for k, p in after.items() if presence in p] == [], after
        assert after != before
        recompiled = conn.execute("SELECT whk.jsonschema_jsonpath(%s)::text", (Jsonb(SCHEMA),)).fetchone()
        assert recompiled == (after["inv.counted@1.0"],)
        docs = [{"id": 1}, {"id": 1, "note": "x"}, {"note": "x"}, {"id": 1.5}, {"id": 1, "note": 2}]
        verdicts = conn.execute(
            "SELECT t.d @@ v.check_path FROM whk.whk_02_eventos_versoes v"
            " JOIN whk.whk_02_eventos e ON e.id = v.event_type_id,"
            " jsonb_array_elements(%s) WITH ORDINALITY AS t(d, n)"
            " WHERE e.name = 'inv.counted' ORDER BY t.n",
            (Jsonb(docs),),
        ).fetchall()
        assert [v for (v,) in verdicts] == [True, True, False, False, False]
