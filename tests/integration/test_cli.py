"""`whk` prints one clear line with a hint for operational errors, and a traceback only with --debug."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

WHK = str(Path(sys.executable).with_name("whk"))


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    return subprocess.run(
        [WHK, *args], capture_output=True, text=True, env={**base, **(env or {})}, timeout=180
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("whk: error: ")
    assert "hint:" in lines[0]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.slow  # four `whk` subprocesses
def test_help_everywhere():
    for args in (["--help"], ["db", "--help"], ["db", "migrate", "--help"], ["apikey", "create", "--help"]):
        proc = run(*args)
        assert proc.returncode == 0 and "usage: whk" in proc.stdout


def test_dsn_that_points_nowhere():
    proc = run("db", "status", env={"WHK_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert_one_line_error(proc, "cannot connect to PostgreSQL", "WHK_DATABASE_URL")


def test_unknown_setting_value():
    proc = run("db", "status", env={"WHK_DISPATCHER_CONCURRENCY": "lots"})
    assert_one_line_error(proc, "WHK_DISPATCHER_CONCURRENCY='lots' is not valid")


def test_unknown_setting_name():
    proc = run("db", "status", env={"WHK_DISPACHER_CONCURRENCY": "4"})
    assert_one_line_error(proc, "unknown setting WHK_DISPACHER_CONCURRENCY")


def test_debug_shows_the_traceback():
    proc = run("--debug", "db", "status", env={"WHK_API_PORT": "x"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr


@pytest.mark.db
def test_migration_syntax_error_is_one_line_and_applies_nothing(tmp_path: Path, empty_db_url: str):
    import shutil

    from tests.support.pg import REPO

    mig = tmp_path / "migrations"
    shutil.copytree(REPO / "sql" / "migrations", mig)
    v = len(list(mig.glob("*.sql"))) + 1
    (mig / f"{v:04d}_broken.sql").write_text(
        f"-- {v:04d} broken: test\nBEGIN;\nSELECT whk.migration_begin({v}, 'broken');\n"
        "CREATE TABLE x (;\nCOMMIT;\n"
    )
    code = (
        "import sys, pathlib, whk.migrate as m; "
        f"m.migrations_dir = lambda: pathlib.Path({str(mig)!r}); "
        "from whk_cli.main import main; sys.exit(main(['db', 'migrate']))"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**base, "WHK_DATABASE_URL": empty_db_url},
        timeout=180,
    )
    assert_one_line_error(proc, f"{v:04d}_broken.sql:4:", "syntax error")
    import psycopg

    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT to_regclass('whk.schema_migrations')").fetchone() == (None,)


@pytest.mark.db
@pytest.mark.slow  # several `whk` subprocesses, `db verify` migrates a scratch database
def test_db_commands_against_a_migrated_database(db_url: str):
    env = {"WHK_DATABASE_URL": db_url}
    status = run("db", "status", env=env)
    assert status.returncode == 0, status.stderr
    assert "applied  0001_ledger" in status.stdout and "pending" not in status.stdout
    plan = run("db", "plan", env=env)
    assert plan.returncode == 0 and "nothing pending" in plan.stdout
    verify = run("db", "verify", env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "live schema matches" in verify.stdout


@pytest.mark.db
@pytest.mark.slow  # `whk db verify` migrates a scratch database
def test_verify_reports_drift(db_url: str):
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DROP INDEX whk.delivery_queue_dead_idx")
    proc = run("db", "verify", env={"WHK_DATABASE_URL": db_url})
    assert proc.returncode == 1
    assert "index whk.delivery_queue_dead_idx" in proc.stdout
    assert "differs from what the migrations create" in proc.stderr


@pytest.mark.db
@pytest.mark.slow  # `whk db` subprocesses against a database migrated step by step
def test_plan_and_status_list_pending_files(empty_db_url: str):
    env = {"WHK_DATABASE_URL": empty_db_url}
    assert run("db", "migrate", "--target", "1", env=env).returncode == 0
    status = run("db", "status", env=env)
    assert "pending  0002_pgqueuer" in status.stdout
    plan = run("db", "plan", env=env)
    assert "-- ===== 0002_pgqueuer.sql" in plan.stdout and "CREATE TABLE whk.pgqueuer" in plan.stdout
    with __import__("psycopg").connect(empty_db_url) as conn:
        assert conn.execute("SELECT to_regclass('whk.pgqueuer')").fetchone() == (None,)
