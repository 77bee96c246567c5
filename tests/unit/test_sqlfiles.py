import pytest

from whk.sqlfiles import parse_named_queries


def test_named_blocks_are_split_and_trimmed():
    text = "-- name: one :one\nSELECT 1;\n\n-- name: many_rows :many\nSELECT *\nFROM t;\n"
    assert parse_named_queries(text) == {"one": "SELECT 1", "many_rows": "SELECT *\nFROM t"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;", "defined twice"),
        ("-- name: a\n\n-- name: b\nSELECT 1", "empty"),
    ],
)
def test_mistakes_are_refused(text: str, message: str):
    with pytest.raises(ValueError, match=message):
        parse_named_queries(text, origin="x.sql")
