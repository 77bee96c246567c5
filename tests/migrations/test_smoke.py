import pytest

pytestmark = pytest.mark.db


def test_template_is_migrated(conn):
    rows = conn.execute(
        "SELECT version, name, checksum IS NOT NULL FROM whk.schema_migrations ORDER BY 1"
    ).fetchall()
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    assert all(r[2] for r in rows)
