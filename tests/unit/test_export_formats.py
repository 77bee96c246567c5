"""whk.export writers without a database: NULLs, an empty export, and Parquet without pyarrow."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import pytest

from whk.export import COLUMNS, PARQUET_HINT, ExportError, make_writer


def _row() -> dict[str, object]:
    row: dict[str, object] = {c.name: None for c in COLUMNS["deliveries"]}
    row.update(id=1, event_id="e1", status="delivered", created_at=datetime(2026, 12, 7, tzinfo=UTC))
    return row


def test_ndjson_and_csv_rows() -> None:
    nd = make_writer("deliveries", "ndjson")
    (line,) = nd.write([_row()]).decode().splitlines()
    out = json.loads(line)
    assert list(out) == [c.name for c in COLUMNS["deliveries"]]
    assert out["created_at"] == "2026-12-07T00:00:00+00:00" and out["delivered_at"] is None
    w = make_writer("deliveries", "csv")
    text = (w.write([_row()]) + w.write([_row()]) + w.close()).decode()
    lines = text.split("\r\n")
    assert lines[0].startswith("id,event_id,event_type,")
    assert lines[1].startswith("1,e1,,") and len(lines) == 4  # header once, two rows, final newline


def test_empty_csv_still_has_its_header() -> None:
    assert make_writer("events", "csv").close().decode().startswith("id,event_id,event_type,event_version")


def test_parquet_without_pyarrow_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what an install without the extra looks like
    with pytest.raises(ExportError) as err:
        make_writer("deliveries", "parquet")
    assert err.value.hint == PARQUET_HINT and "whk[parquet]" in str(err.value)


def test_unknown_format() -> None:
    with pytest.raises(ExportError, match="xlsx"):
        make_writer("deliveries", "xlsx")
