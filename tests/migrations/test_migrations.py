"""Migrations DBAs can trust: layout, parsing, ledger, checksums, locking, version guard, drift."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.support.pg import REPO, PgServer
from whk import catalog, migrate
from whk.db import check_schema_version
from whk.errors import (
    ChecksumMismatch,
    MigrationError,
    MigrationLayoutError,
    MigrationParseError,
    SchemaVersionMismatch,
)

MIGRATIONS = REPO / "sql" / "migrations"


@pytest.fixture
def mig_dir(tmp_path: Path) -> Path:
    """A private copy of the shipped migrations that a test may break."""
    target = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, target)
    return target


def _files(directory: Path) -> list[migrate.MigrationFile]:
    return migrate.discover(directory)


def _ledger(dsn: str) -> list[tuple[int, str]]:
    with psycopg.connect(dsn) as c:
        if c.execute("SELECT to_regclass('whk.schema_migrations')").fetchone() == (None,):
            return []
        return [(r[0], r[1]) for r in c.execute("SELECT version, name FROM whk.schema_migrations ORDER BY 1")]


# ----------------------------------------------------------------------------- layout and parsing
def test_shipped_files_are_named_gapless_and_parse():
    files = migrate.discover()
    assert [f.version for f in files] == list(range(1, len(files) + 1))
    for f in files:
        assert migrate.FILE_RE.match(f.path.name), f.path.name
        assert f.text.startswith(f"-- {f.version:04d} {f.name}:"), "first line says why"
        migrate.check_syntax(f.path, f.text)  # raises on any error


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("0099_gap.sql", "gap"),
        ("04_short.sql", "NNNN_snake_name"),
        ("0004_Bad-Name.sql", "NNNN_snake_name"),
    ],
)
def test_bad_layout_is_refused(mig_dir: Path, name: str, message: str):
    last = max(int(p.name[:4]) for p in mig_dir.glob("*.sql"))
    body = f"-- {name[:4]} x: test\nBEGIN;\nSELECT whk.migration_begin({last + 1}, 'x');\nCOMMIT;\n"
    (mig_dir / name).write_text(body)
    with pytest.raises(MigrationLayoutError, match=message):
        migrate.discover(mig_dir)


def test_duplicate_number_is_refused(mig_dir: Path):
    shutil.copy(mig_dir / "0002_pgqueuer.sql", mig_dir / "0002_again.sql")
    with pytest.raises(MigrationLayoutError, match="gap or duplicate"):
        migrate.discover(mig_dir)


def test_missing_ledger_call_is_refused(mig_dir: Path):
    last = len(list(mig_dir.glob("*.sql")))
    v = last + 1
    (mig_dir / f"{v:04d}_no_ledger.sql").write_text(
        f"-- {v:04d} no_ledger: test\nBEGIN;\nSELECT 1;\nCOMMIT;\n"
    )
    with pytest.raises(MigrationLayoutError, match="migration_begin"):
        migrate.discover(mig_dir)


def _add(mig_dir: Path, name: str, body: str) -> Path:
    v = len(list(mig_dir.glob("*.sql"))) + 1
    path = mig_dir / f"{v:04d}_{name}.sql"
    path.write_text(
        f"-- {v:04d} {name}: test\nBEGIN;\nSELECT whk.migration_begin({v}, '{name}');\n{body}\nCOMMIT;\n"
    )
    return path


def test_sql_syntax_error_names_file_and_line(mig_dir: Path):
    path = _add(mig_dir, "broken", "CREATE TABLE whk.ok (id int);\nCREATE TABLE whk.t (id int,, x int);")
    with pytest.raises(MigrationParseError) as err:
        migrate.discover(mig_dir)
    assert f"{path.name}:5:" in str(err.value)


def test_plpgsql_body_error_is_caught_before_running(mig_dir: Path):
    path = _add(
        mig_dir,
        "bad_body",
        "CREATE FUNCTION whk.f() RETURNS int LANGUAGE plpgsql AS $$\nBEGIN\n  RETURN 1 +;\nEND\n$$;",
    )
    with pytest.raises(MigrationParseError, match=rf"{path.name}:\d+: PL/pgSQL body"):
        migrate.discover(mig_dir)


@pytest.mark.db
def test_syntax_error_applies_nothing(mig_dir: Path, empty_db_url: str):
    _add(mig_dir, "broken", "CREATE TABLE whk.t (id int,, x int);")
    with psycopg.connect(empty_db_url, autocommit=True) as conn, pytest.raises(MigrationParseError):
        migrate.migrate(conn, migrate.discover(mig_dir))
    assert _ledger(empty_db_url) == []


@pytest.mark.db
def test_runtime_error_rolls_back_the_file(mig_dir: Path, empty_db_url: str):
    _add(mig_dir, "fails", "CREATE TABLE whk.half (id int);\nSELECT 1 / 0;")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        with pytest.raises(MigrationError, match="division by zero"):
            migrate.migrate(conn, migrate.discover(mig_dir))
        assert conn.execute("SELECT to_regclass('whk.half')").fetchone() == (None,)
    assert [v for v, _ in _ledger(empty_db_url)] == list(range(1, len(list(MIGRATIONS.glob("*.sql"))) + 1))


# ----------------------------------------------------------------------------- ledger
@pytest.mark.db
def test_reapply_is_refused_and_changes_nothing(db_url: str):
    text = (MIGRATIONS / "0003_baseline.sql").read_text()
    with psycopg.connect(db_url, autocommit=True) as conn:
        before = catalog.snapshot(conn)
        with pytest.raises(psycopg.errors.UniqueViolation, match="already applied"):
            conn.execute(text.encode())
        conn.execute("ROLLBACK")
        assert catalog.snapshot(conn) == before


@pytest.mark.db
def test_out_of_order_apply_is_refused(empty_db_url: str):
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrate.migrate(conn, target=1)
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="cannot follow version 1"):
            conn.execute((MIGRATIONS / "0003_baseline.sql").read_bytes())


@pytest.mark.db
def test_changed_checksum_is_refused_naming_the_file(mig_dir: Path, empty_db_url: str):
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrate.migrate(conn, migrate.discover(mig_dir))
        path = mig_dir / "0003_baseline.sql"
        path.write_text(path.read_text() + "\n-- an innocent edit\n")
        with pytest.raises(ChecksumMismatch, match=r"0003_baseline\.sql was changed"):
            migrate.migrate(conn, migrate.discover(mig_dir))


@pytest.mark.db
def test_psql_applied_files_get_their_checksum_recorded(pg_server: PgServer, empty_db_url: str):
    psql = pg_server.bindir / "psql"
    for f in migrate.discover():
        subprocess.run(
            [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", empty_db_url, "-f", str(f.path)],
            check=True,
            capture_output=True,
        )
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        assert (
            conn.execute("SELECT count(*) FROM whk.schema_migrations WHERE checksum IS NULL").fetchone()[0]
            > 0
        )
        messages: list[str] = []
        assert migrate.migrate(conn, echo=messages.append) == []
        assert any("recorded checksum" in m for m in messages)
        rows = conn.execute("SELECT version, checksum FROM whk.schema_migrations ORDER BY 1").fetchall()
    assert rows == [(f.version, f.checksum) for f in migrate.discover()]


@pytest.mark.db
@pytest.mark.slow
def test_ten_concurrent_runners_apply_each_file_once(empty_db_url: str):
    whk = Path(sys.executable).with_name("whk")
    env = {"WHK_DATABASE_URL": empty_db_url, "PATH": "/usr/bin:/bin"}
    procs = [
        subprocess.Popen([str(whk), "db", "migrate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(10)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 10, [o[1].decode() for o in outputs]
    applied_lines = sum(o[0].decode().count("applied 0") for o in outputs)
    files = migrate.discover()
    assert applied_lines == len(files)
    assert _ledger(empty_db_url) == [(f.version, f.name) for f in files]


# ----------------------------------------------------------------------------- version guard
def test_code_version_reads_file_names_without_parsing(monkeypatch: pytest.MonkeyPatch):
    """Every process start and each unauthenticated GET /health ask for it: parsing every migration with
    pglast took ~190 ms a call."""
    files = migrate.discover()
    expected = migrate.code_version(files)
    assert expected == len(files) >= 3  # gapless: the highest number is the count

    def no_parsing(*_: object) -> None:
        raise AssertionError("code_version parsed a migration")

    monkeypatch.setattr(migrate, "check_syntax", no_parsing)
    assert migrate.code_version() == expected


@pytest.mark.db
def test_schema_version_guard_names_both_versions(db_url: str, empty_db_url: str):
    code = migrate.code_version()
    with psycopg.connect(db_url, autocommit=True) as conn:
        check_schema_version(conn)  # equal: fine
        conn.execute("INSERT INTO whk.schema_migrations (version, name) VALUES (%s, 'future')", (code + 1,))
        with pytest.raises(SchemaVersionMismatch) as err:
            check_schema_version(conn)
        assert f"version {code + 1}" in str(err.value)
        assert f"needs version {code}" in str(err.value)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrate.migrate(conn, target=1)
        with pytest.raises(SchemaVersionMismatch, match="whk db migrate"):
            check_schema_version(conn)


@pytest.mark.db
def test_a_database_from_before_the_baseline_squash_gets_a_clear_refusal(empty_db_url: str):
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrate.migrate(conn, target=2)
        conn.execute("INSERT INTO whk.schema_migrations (version, name) VALUES (3, 'data_model')")
        with pytest.raises(MigrationError, match="created before the migrations were squashed") as err:
            migrate.migrate(conn)
        assert "create the database anew" in (err.value.hint or "")
        assert [v for v, _ in _ledger(empty_db_url)] == [1, 2, 3]


@pytest.mark.db
def test_runner_refuses_a_database_newer_than_the_code(db_url: str):
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO whk.schema_migrations (version, name) VALUES (9999, 'future')")
        with pytest.raises(SchemaVersionMismatch):
            migrate.migrate(conn)


# ----------------------------------------------------------------------------- drift
@pytest.mark.db
def test_fresh_install_equals_migrations(pg_server: PgServer, db_url: str):
    """Readable sources (sql/schema, pgqueuer, sql/functions, sql/triggers) == every migration applied.

    Seed rows count too: a default changed in sql/schema/*_seed.sql but not in a migration is drift.
    """
    fresh = pg_server.create_database()
    try:
        with psycopg.connect(pg_server.dsn(fresh), autocommit=True) as fconn:
            catalog.fresh_install(fconn)
            from_sources = catalog.snapshot(fconn) | catalog.seed_rows(fconn)
        with psycopg.connect(db_url, autocommit=True) as mconn:
            from_migrations = catalog.snapshot(mconn) | catalog.seed_rows(mconn)
    finally:
        pg_server.drop_database(fresh)
    delta = catalog.diff(from_migrations, from_sources, labels=("migrations", "fresh install"))
    assert delta == "", f"schema drift between migrations and sql/ sources:\n{delta}"
    assert any(k.startswith(("column ", "relation whk.outbox")) for k in from_sources)
    assert any(k.startswith("row whk.whk_05_configuracoes retry.policy") for k in from_sources)


@pytest.mark.db
def test_drift_detector_sees_a_difference(conn: psycopg.Connection[object]):
    before = catalog.snapshot(conn)
    conn.execute("ALTER TABLE whk.whk_01_webhooks ALTER COLUMN timeout_ms SET DEFAULT 1")
    delta = catalog.diff(before, catalog.snapshot(conn), labels=("a", "b"))
    assert "column whk.whk_01_webhooks.timeout_ms" in delta and "DEFAULT 1" in delta


@pytest.mark.db
def test_drift_detector_sees_a_seed_row_difference(conn: psycopg.Connection[object]):
    before = catalog.seed_rows(conn)
    conn.execute("UPDATE whk.whk_05_configuracoes SET value = '601' WHERE key = 'rate_limit.api_per_minute'")
    delta = catalog.diff(before, catalog.seed_rows(conn), labels=("a", "b"))
    assert "row whk.whk_05_configuracoes rate_limit.api_per_minute" in delta and "601" in delta


# ----------------------------------------------------------------------------- pgqueuer
def test_pgqueuer_block_matches_the_pinned_pgqueuer():
    text = (MIGRATIONS / "0002_pgqueuer.sql").read_text()
    block = text.split("-- >>> pgqueuer install\n", 1)[1].split("\n-- <<< pgqueuer install", 1)[0]
    assert block.strip() == catalog.pgqueuer_install_sql(), (
        "pgqueuer's DDL changed: add a migration with its upgrade delta (never edit 0002)"
    )


@pytest.mark.db
def test_pgqueuer_objects_match_in_the_catalog(pg_server: PgServer, conn: psycopg.Connection[object]):
    ref = pg_server.create_database()
    try:
        with psycopg.connect(pg_server.dsn(ref), autocommit=True) as rconn:
            rconn.execute("CREATE SCHEMA whk")
            rconn.execute(catalog.pgqueuer_install_sql().encode())
            expected = catalog.snapshot(rconn)
    finally:
        pg_server.drop_database(ref)

    def ddl(snap: dict[str, str]) -> dict[str, str]:
        # Grants are WHK's own business (migration 0006 grants the app role); the DDL must match.
        return {k: re.sub(r" acl \S+", "", v) for k, v in snap.items() if k != "schema whk"}

    actual = {k: v for k, v in catalog.snapshot(conn).items() if k in expected}
    assert ddl(actual) == ddl(expected)


def test_non_ascii_text_does_not_shift_statement_offsets(mig_dir: Path):
    """pglast's offsets count characters: accents before a PL/pgSQL body must not break its check."""
    _add(
        mig_dir,
        "accents",
        "COMMENT ON SCHEMA whk IS 'Configurações, ações, validação';\n"
        "CREATE FUNCTION whk.f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$;",
    )
    migrate.discover(mig_dir)  # no error
    path = _add(mig_dir, "accents_broken", "-- ção ção ção\nCREATE TABLE whk.t (id int,, x int);")
    with pytest.raises(MigrationParseError, match=rf"{path.name}:5:"):
        migrate.discover(mig_dir)
