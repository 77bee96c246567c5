"""Catalog snapshots (compare two databases by object name) and the fresh install from readable sources.

``snapshot`` renders every object of WHK's schemas as ``{"kind name": definition}`` so two databases can
be compared with a readable diff: tables and columns (type, default, not-null), constraints, indexes,
functions (full definition), triggers, views, sequences, enum labels and grants.

``fresh_install_sources`` lists what a fresh install runs: ``sql/schema`` (tables, in file order),
pgqueuer's own DDL (rendered by the pinned pgqueuer), ``sql/functions`` (one folder per concern),
``sql/triggers`` and ``sql/views`` (views that call functions, so they come last). The drift test and
``whk db verify`` compare that with what the migrations produce; ``seed_rows`` adds the rows every install
starts with, so a seed changed in one place only is drift too.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import psycopg

from whk.sqlfiles import sql_root

SCHEMAS = ("whk", "erp")
PGQUEUER_LABEL = "pgqueuer install"

_QUERIES: dict[str, str] = {
    "column": """
        SELECT n.nspname || '.' || c.relname || '.' || a.attname,
               format_type(a.atttypid, a.atttypmod)
               || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
               || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
               || CASE a.attidentity WHEN 'a' THEN ' IDENTITY ALWAYS' WHEN 'd' THEN ' IDENTITY BY DEFAULT'
                  ELSE '' END
               || CASE WHEN a.attgenerated = 's' THEN ' GENERATED' ELSE '' END
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = ANY(%(schemas)s) AND a.attnum > 0 AND NOT a.attisdropped
          AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
    """,
    "relation": """
        SELECT n.nspname || '.' || c.relname,
               c.relkind::text || CASE WHEN c.relpersistence = 'u' THEN ' unlogged' ELSE '' END
               || coalesce(' partition ' || pg_get_expr(c.relpartbound, c.oid), '')
               || coalesce(' acl ' || array_to_string(c.relacl, ','), '')
               || coalesce(' comment ' || obj_description(c.oid, 'pg_class'), '')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
    """,
    "constraint": """
        SELECT n.nspname || '.' || c.relname || '.' || con.conname, pg_get_constraintdef(con.oid)
        FROM pg_constraint con
        JOIN pg_class c ON c.oid = con.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(%(schemas)s)
    """,
    "index": """
        SELECT n.nspname || '.' || i.relname, pg_get_indexdef(i.oid)
        FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_namespace n ON n.oid = i.relnamespace
        WHERE n.nspname = ANY(%(schemas)s)
    """,
    "function": """
        SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
               pg_get_functiondef(p.oid)
               || coalesce(E'\\nacl ' || array_to_string(p.proacl, ','), '')
               || coalesce(E'\\ncomment ' || obj_description(p.oid, 'pg_proc'), '')
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = ANY(%(schemas)s) AND p.prokind IN ('f', 'p', 'w')
    """,
    "trigger": """
        SELECT n.nspname || '.' || c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid)
        FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(%(schemas)s) AND NOT t.tgisinternal
    """,
    "view": """
        SELECT n.nspname || '.' || c.relname, pg_get_viewdef(c.oid)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY(%(schemas)s) AND c.relkind IN ('v', 'm')
    """,
    "type": """
        SELECT n.nspname || '.' || t.typname,
               t.typtype::text || ' ' || coalesce(
                   (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                    FROM pg_enum e WHERE e.enumtypid = t.oid), '')
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = ANY(%(schemas)s) AND t.typtype IN ('e', 'd', 'c')
          AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind <> 'c')
    """,
    "schema": """
        SELECT n.nspname, coalesce(array_to_string(n.nspacl, ','), '')
               || coalesce(' comment ' || obj_description(n.oid, 'pg_namespace'), '')
        FROM pg_namespace n WHERE n.nspname = ANY(%(schemas)s)
    """,
}


def snapshot(conn: psycopg.Connection[Any], schemas: tuple[str, ...] = SCHEMAS) -> dict[str, str]:
    """Every object of ``schemas`` as ``{"<kind> <qualified name>": "<definition>"}``."""
    result: dict[str, str] = {}
    for kind, query in _QUERIES.items():
        for name, definition in conn.execute(query, {"schemas": list(schemas)}).fetchall():
            result[f"{kind} {name}"] = str(definition)
    return result


# Tables whose rows every install starts with (sql/schema/*_seed.sql). Columns stamped at insert time are
# left out: two installs made a second apart must still compare equal.
SEED_TABLES: dict[str, tuple[str, ...]] = {
    "whk.whk_05_configuracoes": ("key",),
    "whk.whk_02_eventos": ("name",),
    "whk.whk_02_eventos_versoes": ("event_type_id", "major", "minor"),
}
_STAMPS = ("created_at", "updated_at", "published_at")


def seed_rows(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """The seeded rows of ``SEED_TABLES`` as ``{"row <table> <key>": "<json>"}``, to diff like a snapshot."""
    result: dict[str, str] = {}
    for table, key in SEED_TABLES.items():
        strip = " - ".join(f"'{c}'" for c in _STAMPS)
        keyexpr = " || '/' || ".join(f"t.{c}::text" for c in key)
        query = f"SELECT {keyexpr}, (to_jsonb(t) - {strip})::text FROM {table} t"  # noqa: S608 (constants)
        for name, row in conn.execute(query).fetchall():
            result[f"row {table} {name}"] = str(row)
    return result


def diff(expected: dict[str, str], actual: dict[str, str], *, labels: tuple[str, str]) -> str:
    """A readable unified diff of two snapshots ('' when equal)."""

    def render(snap: dict[str, str]) -> list[str]:
        lines: list[str] = []
        for key in sorted(snap):
            lines.append(f"{key}:")
            lines.extend(f"    {line}" for line in snap[key].splitlines())
        return lines

    return "\n".join(
        difflib.unified_diff(render(expected), render(actual), labels[0], labels[1], lineterm="", n=2)
    )


def pgqueuer_install_sql() -> str:
    """pgqueuer's own DDL for schema whk, as the pinned pgqueuer renders it (``pgq sql install``)."""
    from pgqueuer.adapters.persistence import qb, schema_ddl  # heavy import, used rarely

    return str(schema_ddl.render_install(qb.DBSettings(db_schema="whk"), create_schema=False)).strip()


def fresh_install_sources(root: Path | None = None) -> list[tuple[str, str]]:
    """(label, sql) in the order a fresh install runs them."""
    root = root or sql_root()
    schema_files = sorted((root / "schema").glob("*.sql"))
    sources: list[tuple[str, str]] = []
    # The ledger first (000_*), then pgqueuer, then the rest of the tables.
    for path in schema_files:
        if path.name.startswith("000_"):
            sources.append((f"schema/{path.name}", path.read_text(encoding="utf-8")))
    sources.append((PGQUEUER_LABEL, pgqueuer_install_sql()))
    for path in schema_files:
        if not path.name.startswith("000_"):
            sources.append((f"schema/{path.name}", path.read_text(encoding="utf-8")))
    # constraints/: CHECKs that call functions (the bounds of JSON settings), so after the functions.
    for sub in ("functions", "triggers", "views", "constraints"):
        for path in sorted((root / sub).rglob("*.sql")):
            sources.append((f"{sub}/{path.relative_to(root / sub)}", path.read_text(encoding="utf-8")))
    return sources


def fresh_install(conn: psycopg.Connection[Any], root: Path | None = None) -> None:
    """Build the schema from the readable sources in one transaction (function bodies checked at the end)."""
    with conn.transaction():
        # Functions may reference each other in any file order; bodies are validated when first called
        # and by the drift test's comparison with the migrated database.
        conn.execute("SET LOCAL check_function_bodies = off")
        for label, text in fresh_install_sources(root):
            try:
                conn.execute(text.encode("utf-8"))
            except psycopg.Error as exc:
                raise RuntimeError(f"fresh install failed in {label}: {exc}") from exc
