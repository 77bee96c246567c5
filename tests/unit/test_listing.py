"""Keyset listing helpers: cursors are opaque, bound to their sort, and filters never reach SQL text."""

from __future__ import annotations

import pytest
from psycopg import sql

from api import listing

FILTERS = (
    listing.FilterSpec("status", "d.status", op="any", cast="text"),
    listing.FilterSpec("name_prefix", "d.name", op="prefix"),
    listing.FilterSpec("since", "d.created_at", op=">=", cast="timestamptz"),
)
SORTS = (listing.SortSpec("id", "d.id", "d.id", "bigint"), listing.SortSpec("name", "d.name", "d.id", "text"))


def _text(c: sql.Composable) -> str:
    return c.as_string(None)


def test_cursor_round_trip_and_sort_binding():
    cur = listing.encode_cursor("-name", "zed", 42)
    assert listing.decode_cursor(cur, "-name") == ("zed", 42)
    with pytest.raises(listing.CursorError, match="made for sort"):
        listing.decode_cursor(cur, "name")
    for bad in ("", "!!!", "bm90IGpzb24", listing.encode_cursor("id", 1, 2)[:-3]):
        with pytest.raises(listing.CursorError):
            listing.decode_cursor(bad, "id")


def test_values_are_bound_never_inlined():
    hostile = "x'); DROP TABLE whk.outbox; --"
    plan = listing.build_list_query(
        filters=FILTERS,
        values={"status": [hostile], "name_prefix": hostile, "since": None},
        sorts=SORTS,
        sort="-name",
        cursor=listing.encode_cursor("-name", hostile, 7),
        fixed=[("d.consumer_id", 3)],
    )
    where = _text(plan.where)
    assert "DROP" not in where and hostile not in where
    assert '"d"."consumer_id" = %(fx0)s' in where
    assert '"d"."status" = %(f_status)s::text' in where  # one value: equality (index friendly)
    assert '("d"."name", "d"."id") < (%(k_sort)s::text, %(k_id)s)' in where
    assert _text(plan.order) == '"d"."name" DESC, "d"."id" DESC'
    assert plan.params["f_name_prefix"] == "x'); DROP TABLE whk.outbox; --%"
    assert "since" not in where


def test_prefix_escapes_like_wildcards_and_many_values_use_any():
    plan = listing.build_list_query(
        filters=FILTERS,
        values={"name_prefix": "50%_a\\", "status": ["a", "b"]},
        sorts=SORTS,
        sort="id",
        cursor=None,
    )
    assert plan.params["f_name_prefix"] == "50\\%\\_a\\\\%"
    assert "= ANY(%(f_status)s::text[])" in _text(plan.where)
    assert _text(plan.order) == '"d"."id" ASC, "d"."id" ASC'


def test_next_cursor_only_when_more_rows_exist():
    class Row:
        def __init__(self, i: int) -> None:
            self.id = i
            self.name = f"n{i}"

    rows = [Row(i) for i in range(3)]
    assert listing.next_cursor(rows, 3, "id", SORTS) is None
    cur = listing.next_cursor(rows, 2, "-name", SORTS)
    assert cur is not None and listing.decode_cursor(cur, "-name") == ("n1", 1)
