"""Forward-only SQL migrations that DBAs can read, review and run with psql.

Rules the runner enforces before anything touches the database:

* files are ``sql/migrations/NNNN_snake_name.sql``, numbered 1..N without gaps or duplicates;
* every file parses with pglast (``parse_sql``, and ``parse_plpgsql`` for PL/pgSQL bodies, which
  ``parse_sql`` treats as opaque strings); a syntax error names the file and line and nothing runs;
* a transactional file (the default) is ``BEGIN; SELECT whk.migration_begin(N, 'name'); … COMMIT;`` so it
  runs as is under ``psql -v ON_ERROR_STOP=1 -f FILE`` and writes its ledger row first;
* a file whose header says ``-- whk:no-transaction`` (for ``CREATE INDEX CONCURRENTLY``) starts with the
  ``migration_begin`` call and is executed statement by statement.

While applying, the runner holds a session-level advisory lock (the same key ``migration_begin`` takes per
transaction), so concurrent runners and psql sessions apply each file exactly once. An applied file whose
checksum changed is refused, naming the file; a file applied through psql (checksum NULL) gets its checksum
recorded on the next run.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pglast
import psycopg
from pglast import parser as pg_parser

from whk.errors import (
    ChecksumMismatch,
    MigrationError,
    MigrationLayoutError,
    MigrationParseError,
    SchemaVersionMismatch,
)
from whk.sqlfiles import sql_root

FILE_RE = re.compile(r"^(\d{4})_([a-z0-9]+(?:_[a-z0-9]+)*)\.sql$")
BEGIN_CALL_RE = re.compile(
    r"SELECT\s+whk\.migration_begin\(\s*(\d+)\s*,\s*'([a-z0-9_]+)'\s*\)", re.IGNORECASE
)
NO_TRANSACTION = "-- whk:no-transaction"
PLPGSQL_RE = re.compile(r"\bLANGUAGE\s+'?plpgsql'?", re.IGNORECASE)
# The migration that holds the whole schema up to WHK 0.1.0 (the squash of everything before it).
BASELINE = "baseline"
LOCK_SQL = "SELECT pg_advisory_lock(hashtext('whk.schema_migrations'))"
UNLOCK_SQL = "SELECT pg_advisory_unlock(hashtext('whk.schema_migrations'))"


@dataclass(frozen=True, slots=True)
class MigrationFile:
    version: int
    name: str
    path: Path
    text: str
    checksum: str
    transactional: bool

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    version: int
    name: str
    checksum: str | None
    applied_at: datetime
    applied_by: str


@dataclass(frozen=True, slots=True)
class Status:
    applied: list[AppliedMigration]
    pending: list[MigrationFile]
    code_version: int

    @property
    def database_version(self) -> int:
        return max((a.version for a in self.applied), default=0)


def migrations_dir() -> Path:
    return sql_root() / "migrations"


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, max(offset, 0)) + 1


def check_syntax(path: Path, text: str) -> None:
    """Parse ``text`` with pglast; raise MigrationParseError with file and line on the first error."""
    try:
        stmts = pg_parser.parse_sql(text)
    except pglast.parser.ParseError as exc:
        message, offset = (*exc.args, None)[:2]
        line = _line_of(text, offset) if isinstance(offset, int) else "?"
        raise MigrationParseError(
            f"{path.name}:{line}: {message}", hint="fix the SQL; nothing was applied"
        ) from exc
    for stmt in stmts:
        # pglast reports stmt_location/stmt_len in characters of the text (not UTF-8 bytes).
        start = stmt.stmt_location or 0
        end = start + stmt.stmt_len if stmt.stmt_len else len(text)
        chunk = text[start:end]
        kind = type(stmt.stmt).__name__
        is_plpgsql = kind == "DoStmt" or (kind == "CreateFunctionStmt" and PLPGSQL_RE.search(chunk))
        if not is_plpgsql:
            continue
        try:
            pglast.parse_plpgsql(chunk)
        except pglast.parser.ParseError as exc:
            line = _line_of(text, start + len(chunk) - len(chunk.lstrip()))
            raise MigrationParseError(
                f"{path.name}:{line}: PL/pgSQL body: {exc.args[0]}", hint="fix the SQL; nothing was applied"
            ) from exc


def _check_shape(mf: MigrationFile) -> None:
    calls = BEGIN_CALL_RE.findall(mf.text)
    if len(calls) != 1:
        raise MigrationLayoutError(
            f"{mf.path.name}: must call whk.migration_begin({mf.version}, '{mf.name}') exactly once",
            hint="the ledger row goes first so that a re-apply fails fast",
        )
    version, name = int(calls[0][0]), calls[0][1]
    if (version, name) != (mf.version, mf.name):
        raise MigrationLayoutError(
            f"{mf.path.name}: calls migration_begin({version}, '{name}'), "
            f"expected ({mf.version}, '{mf.name}')"
        )
    stmts = [s.strip().upper() for s in pglast.split(mf.text)]
    if mf.transactional:
        # 0001 creates the ledger itself, so only it may call migration_begin later than second.
        call_at = 1 if mf.version > 1 else next((i for i, s in enumerate(stmts) if BEGIN_CALL_RE.match(s)), 0)
        if (
            len(stmts) < 3
            or stmts[0] != "BEGIN"
            or stmts[-1] != "COMMIT"
            or not BEGIN_CALL_RE.match(stmts[call_at])
        ):
            raise MigrationLayoutError(
                f"{mf.path.name}: a transactional migration is "
                "BEGIN; SELECT whk.migration_begin(...); … COMMIT;",
                hint=f"or mark it with '{NO_TRANSACTION}' in its header",
            )
    elif not stmts or not BEGIN_CALL_RE.match(stmts[0]):
        raise MigrationLayoutError(f"{mf.path.name}: a no-transaction migration starts with migration_begin")


def discover(directory: Path | None = None) -> list[MigrationFile]:
    """Read, check and order the migration files (layout and syntax); raise on any problem."""
    directory = directory or migrations_dir()
    files: list[MigrationFile] = []
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        m = FILE_RE.match(path.name)
        if not m:
            raise MigrationLayoutError(
                f"{path.name}: migration files are named NNNN_snake_name.sql", hint="rename the file"
            )
        text = path.read_text(encoding="utf-8")
        header = "\n".join(line for line in text.splitlines()[:20] if line.startswith("--"))
        files.append(
            MigrationFile(
                version=int(m.group(1)),
                name=m.group(2),
                path=path,
                text=text,
                checksum=hashlib.sha256(text.encode("utf-8")).hexdigest(),
                transactional=NO_TRANSACTION not in header,
            )
        )
    for expected, mf in enumerate(files, start=1):
        if mf.version != expected:
            raise MigrationLayoutError(
                f"migration numbering has a gap or duplicate at {mf.path.name} (expected {expected:04d})",
                hint="numbers are gapless and never reused",
            )
    for mf in files:
        if not mf.text.startswith(f"-- {mf.version:04d} {mf.name}:"):
            raise MigrationLayoutError(
                f"{mf.path.name}: the first line must be '-- {mf.version:04d} {mf.name}: <why>'"
            )
    for mf in files:
        check_syntax(mf.path, mf.text)
        _check_shape(mf)
    return files


def code_version(files: Sequence[MigrationFile] | None = None) -> int:
    """The schema version this code expects: the highest migration number it ships.

    Without ``files`` it is read from the file names only: the version guard of every process start and
    the API's unauthenticated /health call it, and ``discover`` (which parses every file with pglast)
    took ~190 ms for 22 files. The files themselves are checked whenever migrations are planned or run."""
    if files is not None:
        return max((f.version for f in files), default=0)
    versions = [
        int(m.group(1))
        for path in migrations_dir().iterdir()
        if path.suffix == ".sql" and (m := FILE_RE.match(path.name)) is not None
    ]
    return max(versions, default=0)


def read_applied(conn: psycopg.Connection[Any]) -> list[AppliedMigration]:
    exists = conn.execute("SELECT to_regclass('whk.schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return []
    rows = conn.execute(
        "SELECT version, name, checksum, applied_at, applied_by FROM whk.schema_migrations ORDER BY version"
    ).fetchall()
    return [AppliedMigration(*row) for row in rows]


def _compare(files: Sequence[MigrationFile], applied: Sequence[AppliedMigration]) -> list[MigrationFile]:
    by_version = {f.version: f for f in files}
    for a in applied:
        mf = by_version.get(a.version)
        if mf is None:
            raise SchemaVersionMismatch(database=max(x.version for x in applied), code=code_version(files))
        if mf.name != a.name and mf.name == BASELINE:
            raise MigrationError(
                f"this database was created before the migrations were squashed into {mf.path.name}"
                f" (its ledger has {a.version:04d}_{a.name})",
                hint="nothing was released before the squash: dump the data you need and create the database"
                " anew (for `whk up`'s private server, remove WHK_DATA_DIR); see CHANGELOG.md",
            )
        if mf.name != a.name:
            raise MigrationError(
                f"ledger has {a.version:04d}_{a.name} but the code ships {mf.path.name}",
                hint="migration files are never renamed",
            )
        if a.checksum is not None and a.checksum != mf.checksum:
            raise ChecksumMismatch(
                f"{mf.path.name} was changed after it was applied (checksum {a.checksum[:12]}… != "
                f"{mf.checksum[:12]}…)",
                hint="never edit an applied migration; add a new one",
            )
    done = {a.version for a in applied}
    return [f for f in files if f.version not in done]


def status(conn: psycopg.Connection[Any], files: Sequence[MigrationFile] | None = None) -> Status:
    files = discover() if files is None else list(files)
    applied = read_applied(conn)
    pending = _compare(files, applied)
    return Status(applied=applied, pending=pending, code_version=code_version(files))


def _execute_file(conn: psycopg.Connection[Any], mf: MigrationFile) -> None:
    conn.execute("SELECT set_config('whk.migration_checksum', %s, false)", (mf.checksum,))
    try:
        if mf.transactional:
            # No parameters: psycopg sends the whole file as one simple query, exactly like psql.
            conn.execute(mf.text.encode("utf-8"))
        else:
            for stmt in pglast.split(mf.text):
                conn.execute(stmt.encode("utf-8"))
    except psycopg.Error as exc:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
        diag = exc.diag
        detail = diag.message_primary or str(exc).strip()
        where = f" ({diag.context.strip().splitlines()[0]})" if diag.context else ""
        raise MigrationError(
            f"{mf.path.name}: {detail}{where}",
            hint=diag.message_hint or "the file's transaction was rolled back; fix it and run again",
        ) from exc
    finally:
        if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            conn.execute("SELECT set_config('whk.migration_checksum', '', false)")


def migrate(
    conn: psycopg.Connection[Any],
    files: Sequence[MigrationFile] | None = None,
    *,
    target: int | None = None,
    echo: Callable[[str], None] = lambda _msg: None,
) -> list[MigrationFile]:
    """Apply every pending migration (up to ``target``) under the advisory lock; return what was applied.

    ``conn`` must be in autocommit mode: each file manages its own transaction.
    """
    if not conn.autocommit:
        raise MigrationError("the migration connection must be in autocommit mode")
    files = discover() if files is None else list(files)
    conn.execute(LOCK_SQL)
    try:
        applied = read_applied(conn)
        pending = _compare(files, applied)
        by_version = {f.version: f for f in files}
        for a in applied:
            if a.checksum is None:
                conn.execute(
                    "UPDATE whk.schema_migrations SET checksum = %s WHERE version = %s AND checksum IS NULL",
                    (by_version[a.version].checksum, a.version),
                )
                echo(f"recorded checksum of {by_version[a.version].path.name} (applied with psql)")
        done: list[MigrationFile] = []
        for mf in pending:
            if target is not None and mf.version > target:
                break
            _execute_file(conn, mf)
            echo(f"applied {mf.path.name}")
            done.append(mf)
        return done
    finally:
        if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            conn.execute(UNLOCK_SQL)
