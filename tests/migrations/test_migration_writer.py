"""`whk db new-migration` and the function-text check: no function body is copied into a migration by hand."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.pg import REPO
from whk import migrate, migration_writer
from whk.errors import MigrationError


@pytest.fixture
def sql_copy(tmp_path: Path) -> Path:
    """A private copy of sql/ (migrations and sources) that a test may change."""
    root = tmp_path / "sql"
    shutil.copytree(REPO / "sql", root)
    return root


def test_every_function_file_equals_the_last_migration_that_creates_it():
    assert migration_writer.stale_functions() == []


def test_an_edited_function_file_without_a_migration_is_caught(sql_copy: Path):
    path = migration_writer.function_files(sql_copy)["claim_deliveries"]
    path.write_text(path.read_text() + "\n-- an edit nobody shipped\n")
    problems = migration_writer.stale_functions(sql_copy)
    assert len(problems) == 1
    assert "claim_deliveries.sql: differs from its text in" in problems[0]
    assert "--function claim_deliveries" in problems[0]


def test_a_hand_edited_copy_in_a_migration_is_caught(sql_copy: Path):
    last = migrate.discover(sql_copy / "migrations")[-1].path
    text = last.read_text()
    assert "RETURNS" in text
    last.write_text(text.replace("RETURNS", "RETURNS  ", 1))
    assert migration_writer.stale_functions(sql_copy) != []


def test_new_migration_ships_the_current_text_of_the_named_functions(sql_copy: Path):
    files = migration_writer.function_files(sql_copy)
    edited = files["retry_delivery"]
    edited.write_text(edited.read_text().replace("-- Manual retry", "-- Manual (operator) retry", 1))
    assert any("retry_delivery.sql" in p for p in migration_writer.stale_functions(sql_copy))

    before = migrate.discover(sql_copy / "migrations")
    path = migration_writer.new_migration(
        "retry_wording", "reword a comment", functions=["retry_delivery", "retry_deliveries"], root=sql_copy
    )
    after = migrate.discover(sql_copy / "migrations")
    assert path.name == f"{len(before) + 1:04d}_retry_wording.sql"
    assert [f.version for f in after] == list(range(1, len(before) + 2))
    text = path.read_text()
    assert text.startswith(f"-- {len(before) + 1:04d} retry_wording: reword a comment\n")
    assert f"SELECT whk.migration_begin({len(before) + 1}, 'retry_wording');" in text
    assert "-- >>> sql/functions/delivery/retry_delivery.sql\n" in text
    assert edited.read_text().strip() in text
    assert migration_writer.stale_functions(sql_copy) == []


@pytest.mark.parametrize(
    ("name", "why", "functions", "message"),
    [
        ("Bad-Name", "x", ["emit"], "bad migration name"),
        ("ok_name", " ", ["emit"], "says why"),
        ("ok_name", "x", ["no_such_function"], "no sql/functions file for no_such_function"),
        ("ok_name", "x", [], "name the functions"),
    ],
)
def test_new_migration_refuses_bad_requests(
    sql_copy: Path, name: str, why: str, functions: list[str], message: str
):
    count = len(list((sql_copy / "migrations").glob("*.sql")))
    with pytest.raises(MigrationError, match=message):
        migration_writer.new_migration(name, why, functions=functions, root=sql_copy)
    assert len(list((sql_copy / "migrations").glob("*.sql"))) == count


def test_function_names_are_unique_across_concern_folders(sql_copy: Path):
    dup = sql_copy / "functions" / "ops" / "emit.sql"
    dup.write_text("-- a second emit\n")
    with pytest.raises(MigrationError, match="two files define emit"):
        migration_writer.function_files(sql_copy)
