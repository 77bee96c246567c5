"""Product docs stay product docs: no diaries, and the architecture map points at files that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.pg import REPO

DOCS = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_no_session_diaries(doc: Path):
    """Measurement history belongs in docs/performance.md and the CHANGELOG, not in "Session N" notes."""
    hits = [line for line in doc.read_text().splitlines() if re.search(r"\bsession [0-9]", line, re.I)]
    assert hits == []


def _data_path_rows() -> list[str]:
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## The data path, arrow by arrow", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and "→" in line.split("|")[1]]


def test_the_data_path_table_has_every_arrow():
    arrows = [row.split("|")[1].strip() for row in _data_path_rows()]
    for arrow in (
        "ERP commit → outbox",
        "outbox → route",
        "route → claim",
        "claim → signed POST",
        "outcome → attempt row",
        "attempt → retry / dead letter",
    ):
        assert arrow in arrows


def test_every_owner_in_the_data_path_table_exists():
    sql_files = {p.name for p in (REPO / "sql" / "functions").rglob("*.sql")}
    named = 0
    for row in _data_path_rows():
        owners = row.split("|")[3]
        for ref in re.findall(r"`([^`]+)`", owners):
            if ref.endswith(".py"):
                assert (REPO / ref).is_file(), ref
            elif ref.endswith(".sql") and "/" not in ref:
                assert ref in sql_files, ref
            elif ref.startswith("whk.") and "(" not in ref:
                assert f"{ref.removeprefix('whk.')}.sql" in sql_files, ref
            else:
                continue
            named += 1
    assert named > 20
