"""Write migrations from the readable SQL sources, so no function body is ever copied by hand.

``sql/functions/<concern>/<name>.sql`` holds the current text of each function (file name = function
name). ``whk db new-migration NAME --why TEXT --function F … --file PATH …`` writes the next numbered
migration with the current text of each named file between marker lines (``--file``: any other fresh-install
source under ``sql/``, e.g. ``triggers/dead_letter_body.sql``, for the objects that are not functions)::

    -- >>> sql/functions/delivery/claim_deliveries.sql
    CREATE OR REPLACE FUNCTION whk.claim_deliveries(…) …
    -- <<< sql/functions/delivery/claim_deliveries.sql

``--all`` writes every fresh-install source (schema, functions, triggers, views) instead: that is how the
baseline migration is made.

``stale_functions`` is the check behind the function-text test: the last migration that creates a function
must contain its ``sql/functions`` file text for text, so editing a function file without writing a
migration (or hand-editing a copy in a migration) fails the suite.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pglast import ast
from pglast import parser as pg_parser

from whk import catalog, migrate
from whk.errors import MigrationError
from whk.sqlfiles import sql_root

OPEN = "-- >>> "
CLOSE = "-- <<< "


def function_files(root: Path | None = None) -> dict[str, Path]:
    """``{function name: file}`` for every file under ``sql/functions`` (names are unique across folders)."""
    root = root or sql_root()
    found: dict[str, Path] = {}
    for path in sorted((root / "functions").rglob("*.sql")):
        if path.stem in found:
            raise MigrationError(
                f"two files define {path.stem}: {found[path.stem]} and {path}",
                hint="one function per file, file name = function name",
            )
        found[path.stem] = path
    return found


def _block(label: str, text: str) -> str:
    return f"{OPEN}{label}\n{text.strip()}\n{CLOSE}{label}\n"


def render(version: int, name: str, why: str, sources: Sequence[tuple[str, str]], *, deferred: bool) -> str:
    """The text of migration ``version``: header, ledger call, then each source between markers."""
    why_lines = " ".join(why.split())
    parts = [
        f"-- {version:04d} {name}: {why_lines}\n",
        "-- Written by `whk db new-migration`: each block below is the text of the named file.\n",
        "BEGIN;\n",
        f"SELECT whk.migration_begin({version}, '{name}');\n",
    ]
    if deferred:
        parts.append(
            "-- Functions call each other in any order; their bodies are checked when first called "
            "(and by the drift test).\nSET LOCAL check_function_bodies = off;\n"
        )
    for label, text in sources:
        parts.append("\n" + _block(label, text))
    parts.append("\nCOMMIT;\n")
    return "".join(parts)


def new_migration(
    name: str,
    why: str,
    *,
    functions: Sequence[str] = (),
    files: Sequence[str] = (),
    include_all: bool = False,
    root: Path | None = None,
) -> Path:
    """Write the next numbered migration (see the module docstring); return its path."""
    root = root or sql_root()
    directory = root / "migrations"
    if not migrate.FILE_RE.match(f"0000_{name}.sql"):
        raise MigrationError(f"bad migration name {name!r}", hint="lower-case snake_case, e.g. claim_by_key")
    if not why.strip():
        raise MigrationError("a migration says why", hint="pass --why 'what changes and why'")
    if include_all == bool(functions or files):
        raise MigrationError(
            "name the functions (or files) to ship, or --all", hint="e.g. --function claim_deliveries"
        )
    existing = migrate.discover(directory)
    version = (existing[-1].version if existing else 0) + 1
    if include_all:
        # Everything a fresh install runs but the ledger (0001) and pgqueuer's DDL (0002).
        sources = [
            (f"sql/{label}", text)
            for label, text in catalog.fresh_install_sources(root)
            if label != catalog.PGQUEUER_LABEL and not label.startswith("schema/000_")
        ]
    else:
        known = function_files(root)
        missing = [f for f in functions if f not in known]
        if missing:
            raise MigrationError(
                f"no sql/functions file for {', '.join(missing)}",
                hint="the name is the file name without .sql",
            )
        sources = [(str(known[f].relative_to(root.parent)), known[f].read_text("utf-8")) for f in functions]
        for name_ in files:
            src = (root / name_).resolve()
            if not src.is_file() or src.suffix != ".sql" or root.resolve() not in src.parents:
                raise MigrationError(
                    f"no sql file {name_!r} under {root}",
                    hint="a path relative to sql/, e.g. views/kpi_slo.sql",
                )
            sources.append((str(src.relative_to(root.resolve().parent)), src.read_text("utf-8")))
    path = directory / f"{version:04d}_{name}.sql"
    text = render(version, name, why, sources, deferred=include_all or len(sources) > 1)
    migrate.check_syntax(path, text)
    path.write_text(text, encoding="utf-8")
    return path


def _created_functions(text: str) -> set[str]:
    names: set[str] = set()
    for raw in pg_parser.parse_sql(text):
        stmt = raw.stmt
        if isinstance(stmt, ast.CreateFunctionStmt) and stmt.funcname:
            names.add(stmt.funcname[-1].sval)
    return names


def stale_functions(root: Path | None = None) -> list[str]:
    """Function files whose text differs from the last migration that creates the function (or none does)."""
    root = root or sql_root()
    files = migrate.discover(root / "migrations")
    last: dict[str, migrate.MigrationFile] = {}
    for mig in files:
        for fname in _created_functions(mig.text):
            last[fname] = mig
    problems: list[str] = []
    for fname, path in function_files(root).items():
        label = path.relative_to(root.parent)
        creator = last.get(fname)
        if creator is None:
            problems.append(f"{label}: no migration creates whk.{fname}")
        elif path.read_text("utf-8").strip() not in creator.text:
            problems.append(
                f"{label}: differs from its text in {creator.path.name}, the last migration that creates it"
                f" (write one: whk db new-migration NAME --why … --function {fname})"
            )
    return problems
