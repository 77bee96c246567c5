"""docs/delivery-states.md draws the delivery state machine as it is.

Its states are exactly the CHECK list of whk_03_entregas.status, every arrow names an existing function
file, and every function under sql/functions that writes the status is on some arrow.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "delivery-states.md"
TABLE = ROOT / "sql" / "schema" / "150_whk_03_entregas.sql"
FUNCTIONS = ROOT / "sql" / "functions"

_ARROW = re.compile(r"^\s*(\[\*\]|\w+)\s*-->\s*(\w+)\s*:\s*(.+?)\s*$")
_LABEL = re.compile(r"^whk\.(\w+) \(([\w/]+\.sql)\)")
# A statement that writes whk.delivery_queue.status: an UPDATE whose SET list assigns it, or an INSERT.
_UPDATE = re.compile(
    r"UPDATE\s+whk\.delivery_queue\b(?:\s+(?:AS\s+)?\w+)?\s+SET\s+(.*?)\bWHERE\b", re.S | re.I
)
_INSERT = re.compile(r"INSERT\s+INTO\s+whk\.delivery_queue\s*\(([^)]*)\)", re.I)


def check_statuses(table_sql: str) -> set[str]:
    """The values of ``status … CHECK (status IN (…))`` in the CREATE TABLE."""
    m = re.search(r"\n\s*status\s+text\b.*?CHECK\s*\(\s*status\s+IN\s*\(([^)]*)\)", table_sql, re.S)
    assert m, "no CHECK (status IN (...)) on whk_03_entregas.status"
    return set(re.findall(r"'([a-z_]+)'", m.group(1)))


def arrows(doc: str) -> list[tuple[str, str, str]]:
    """(from, to, label) of every transition in the document's mermaid stateDiagram-v2 block."""
    blocks = re.findall(r"```mermaid\n(.*?)```", doc, re.S)
    assert len(blocks) == 1 and blocks[0].lstrip().startswith("stateDiagram-v2"), "one mermaid state diagram"
    found = []
    for line in blocks[0].splitlines()[1:]:
        if not line.strip():
            continue
        m = _ARROW.match(line)
        assert m, f"not a labelled transition: {line!r}"
        found.append((m.group(1), m.group(2), m.group(3)))
    return found


def diagram_states(doc: str) -> set[str]:
    return {s for a, b, _ in arrows(doc) for s in (a, b)} - {"[*]"}


def status_writers(functions: Path) -> set[str]:
    """Names of the sql/functions files that change whk.delivery_queue.status."""
    writers = set()
    for path in functions.rglob("*.sql"):
        text = re.sub(r"--[^\n]*", "", path.read_text("utf-8"))
        sets = _UPDATE.findall(text)
        inserts = _INSERT.findall(text)
        if any(re.search(r"(^|[\s,])status\s*=", s) for s in sets) or any(
            re.search(r"\bstatus\b", cols) for cols in inserts
        ):
            writers.add(path.stem)
    return writers


def test_the_diagram_has_exactly_the_states_of_the_check_constraint():
    assert diagram_states(DOC.read_text("utf-8")) == check_statuses(TABLE.read_text("utf-8"))


def test_every_arrow_names_the_function_file_that_performs_it():
    for a, b, label in arrows(DOC.read_text("utf-8")):
        m = _LABEL.match(label)
        assert m, f"{a} --> {b}: the label starts with whk.<function> (<folder>/<file>.sql)"
        path = FUNCTIONS / m.group(2)
        assert path.is_file() and path.stem == m.group(1), f"{a} --> {b}: no {path}"


def test_every_function_that_writes_the_status_is_on_an_arrow():
    drawn = {m.group(1) for _, _, label in arrows(DOC.read_text("utf-8")) if (m := _LABEL.match(label))}
    writers = status_writers(FUNCTIONS)
    assert {"route_and_take", "claim_deliveries", "record_outcomes", "delete_webhook"} <= writers
    assert writers <= drawn, f"missing from docs/delivery-states.md: {sorted(writers - drawn)}"


@pytest.mark.parametrize(
    ("table", "doc", "same"),
    [
        ("status text CHECK (status IN ('a', 'b')),", "[*] --> a: x\n    a --> b: y", True),
        ("status text CHECK (status IN ('a', 'b', 'c')),", "[*] --> a: x\n    a --> b: y", False),
        ("status text CHECK (status IN ('a')),", "[*] --> a: x\n    a --> b: y", False),
    ],
)
def test_the_comparison_sees_a_missing_or_extra_state(table: str, doc: str, same: bool):
    text = f"```mermaid\nstateDiagram-v2\n    {doc}\n```\n"
    assert (diagram_states(text) == check_statuses(f"CREATE TABLE t (\n    {table}\n)")) is same


def test_the_writer_scan_sees_updates_and_inserts(tmp_path: Path):
    (tmp_path / "a.sql").write_text(
        "UPDATE whk.delivery_queue d\nSET status = 'x', updated_at = now() WHERE true;"
    )
    (tmp_path / "b.sql").write_text("INSERT INTO whk.delivery_queue (id, status) VALUES (1, 'x');")
    (tmp_path / "c.sql").write_text("UPDATE whk.delivery_queue d SET last_error = 'status = 1' WHERE true;")
    (tmp_path / "d.sql").write_text("SELECT 1 FROM whk.whk_03_entregas d WHERE d.status = 'x';")
    assert status_writers(tmp_path) == {"a", "b"}
