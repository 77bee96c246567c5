"""Regenerate whk/testing/catalogue.json against a throwaway, freshly migrated server:

.venv/bin/python -m tests.support.catalogue
"""

from __future__ import annotations

import psycopg

from tests.support.pg import migrate_database, start_server
from whk.testing.catalogue import CATALOGUE_PATH, read_seed_catalogue, render


def main() -> int:
    server = start_server()
    try:
        name = server.create_database()
        dsn = server.dsn(name)
        migrate_database(dsn)
        with psycopg.connect(dsn) as conn:
            CATALOGUE_PATH.write_text(render(read_seed_catalogue(conn)), encoding="utf-8")
    finally:
        server.stop()
    print(f"wrote {CATALOGUE_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
