"""Regenerate the packaged catalogue (``whk/testing/catalogue.json``) from a freshly migrated database.

    python -m whk.testing.catalogue --database-url postgresql://…/fresh --write
    python -m tests.support.catalogue            # the same against a throwaway server (needs the repo)

Only the seed catalogue (``sql/schema/202_whk_02_eventos_seed.sql``, rows with ``metadata.seed``) is
written, so a database with event types of its own still regenerates the same file. A test
(tests/db/test_testing_catalogue.py) fails when the file and the seed disagree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

__all__ = ["CATALOGUE_PATH", "read_seed_catalogue", "render"]

CATALOGUE_PATH = Path(__file__).with_name("catalogue.json")

_QUERY = """
SELECT e.name, e.description, v.major, v.minor, v.schema
FROM whk.whk_02_eventos e
JOIN whk.whk_02_eventos_versoes v ON v.event_type_id = e.id
WHERE e.metadata @> '{"seed": true}'
ORDER BY e.name, v.major, v.minor
"""


def read_seed_catalogue(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """``{"event_types": {name: {"description", "versions": {"M.m": schema}}}}`` of the seed rows."""
    types: dict[str, Any] = {}
    for name, description, major, minor, schema in conn.execute(_QUERY).fetchall():
        entry = types.setdefault(name, {"description": description, "versions": {}})
        entry["versions"][f"{major}.{minor}"] = schema if isinstance(schema, dict) else json.loads(schema)
    return {
        "generated_from": "sql/schema/202_whk_02_eventos_seed.sql by python -m whk.testing.catalogue",
        "event_types": types,
    }


def render(catalogue: dict[str, Any]) -> str:
    return json.dumps(catalogue, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m whk.testing.catalogue", description=__doc__.splitlines()[0])
    p.add_argument("--database-url", default=os.environ.get("WHK_DATABASE_URL"))
    p.add_argument("--write", action="store_true", help=f"write {CATALOGUE_PATH.name} (default: print)")
    args = p.parse_args(argv)
    if not args.database_url:
        p.error("--database-url (or WHK_DATABASE_URL) of a migrated database is required")
    with psycopg.connect(args.database_url) as conn:
        text = render(read_seed_catalogue(conn))
    if args.write:
        CATALOGUE_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {CATALOGUE_PATH}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
