"""Analytics export of delivery and event history: NDJSON, CSV or Parquet, streamed in keyset pages.

One module for both doors: ``whk export`` (``whk_cli``, a sync connection, progress on stderr) and
``GET /api/whk/exports/{kind}`` (``api.exports``, an async connection, a streamed download scoped to the
caller's tenant). Rows are read ``PAGE`` at a time in key order (``export.sql``), so memory stays flat
however long the history; each page is encoded and written before the next is read.

Formats (``FORMATS``):

* ``ndjson`` — one JSON object per row (timestamps ISO 8601, UTC);
* ``csv`` — a header row, then one row per record (RFC 4180 quoting; empty cell = NULL);
* ``parquet`` — one row group per page, typed columns (timestamps in microseconds, UTC). Needs pyarrow,
  the optional extra ``parquet``: ``pip install 'whk[parquet]'``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, Protocol

from whk.errors import WhkError
from whk.sqlfiles import load_queries

__all__ = [
    "FORMATS",
    "KINDS",
    "MEDIA_TYPES",
    "PAGE",
    "ExportError",
    "Writer",
    "apages",
    "count",
    "make_writer",
    "pages",
]

Kind = Literal["deliveries", "events"]
Format = Literal["ndjson", "csv", "parquet"]
KINDS: Final = ("deliveries", "events")
FORMATS: Final = ("ndjson", "csv", "parquet")
MEDIA_TYPES: Final = {
    "ndjson": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}
PAGE: Final = 1000
_FAR_PAST: Final = datetime.fromisoformat("0001-01-01T00:00:00+00:00")
_FAR_FUTURE: Final = datetime.fromisoformat("9999-12-31T00:00:00+00:00")
PARQUET_HINT: Final = "install the optional extra: pip install 'whk[parquet]' (it brings pyarrow)"


class ExportError(WhkError):
    """The export cannot be made as asked (e.g. Parquet without pyarrow)."""


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: Literal["int", "float", "text", "bool", "time"]


COLUMNS: Final[dict[str, tuple[Column, ...]]] = {
    "deliveries": (
        Column("id", "int"),
        Column("event_id", "text"),
        Column("event_type", "text"),
        Column("webhook_id", "int"),
        Column("consumer_id", "int"),
        Column("status", "text"),
        Column("attempts", "int"),
        Column("last_status_code", "int"),
        Column("last_error", "text"),
        Column("dead_reason", "text"),
        Column("event_created_at", "time"),
        Column("created_at", "time"),
        Column("last_attempt_at", "time"),
        Column("delivered_at", "time"),
        Column("dead_at", "time"),
        Column("latency_ms", "float"),
    ),
    "events": (
        Column("id", "int"),
        Column("event_id", "text"),
        Column("event_type", "text"),
        Column("event_version", "int"),
        Column("event_key", "text"),
        Column("operation", "text"),
        Column("source_table", "text"),
        Column("status", "text"),
        Column("valid", "bool"),
        Column("validation_error", "text"),
        Column("created_at", "time"),
        Column("routed_at", "time"),
        Column("payload", "text"),
    ),
}


def _params(
    kind: str, since: datetime | None, until: datetime | None, tenant: int | None, key: tuple[Any, ...]
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "since": since or _FAR_PAST,
        "until": until or _FAR_FUTURE,
        "tenant": tenant,
        "limit": PAGE,
        "after_id": key[-1],
    }
    if kind == "events":
        params["after_at"] = key[0]
    return params


def _start(kind: str) -> tuple[Any, ...]:
    return (_FAR_PAST, 0) if kind == "events" else (0,)


def _next_key(kind: str, row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["created_at"], row["id"]) if kind == "events" else (row["id"],)


def _rows(cur: Any) -> list[dict[str, Any]]:
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


async def _arows(cur: Any) -> list[dict[str, Any]]:
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]


def pages(
    conn: Any, kind: str, *, since: datetime | None, until: datetime | None = None, tenant: int | None = None
) -> Iterator[list[dict[str, Any]]]:
    """The rows of ``kind`` created in [since, until), a page at a time, oldest first."""
    q = load_queries("whk", "export.sql")
    key = _start(kind)
    while True:
        rows = _rows(conn.execute(q[f"{kind}_page"], _params(kind, since, until, tenant, key)))
        if rows:
            yield rows
        if len(rows) < PAGE:
            return
        key = _next_key(kind, rows[-1])


async def apages(
    conn: Any, kind: str, *, since: datetime | None, until: datetime | None = None, tenant: int | None = None
) -> AsyncIterator[list[dict[str, Any]]]:
    """``pages`` over an async connection."""
    q = load_queries("whk", "export.sql")
    key = _start(kind)
    while True:
        rows = await _arows(await conn.execute(q[f"{kind}_page"], _params(kind, since, until, tenant, key)))
        if rows:
            yield rows
        if len(rows) < PAGE:
            return
        key = _next_key(kind, rows[-1])


def count(
    conn: Any, kind: str, *, since: datetime | None, until: datetime | None = None, tenant: int | None = None
) -> int:
    """How many rows ``pages`` will yield (for a progress bar)."""
    q = load_queries("whk", "export.sql")
    row = conn.execute(q[f"{kind}_count"], _params(kind, since, until, tenant, _start(kind))).fetchone()
    return int(row[0]) if row else 0


class Writer(Protocol):
    """Encodes pages of rows into bytes: ``write`` per page, ``close`` once (both may return b"")."""

    def write(self, rows: Sequence[dict[str, Any]]) -> bytes: ...

    def close(self) -> bytes: ...


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


class _Ndjson:
    def __init__(self, columns: Sequence[Column]) -> None:
        self._names = [c.name for c in columns]

    def write(self, rows: Sequence[dict[str, Any]]) -> bytes:
        out = io.StringIO()
        for r in rows:
            out.write(json.dumps({n: _plain(r[n]) for n in self._names}, separators=(",", ":")))
            out.write("\n")
        return out.getvalue().encode()

    def close(self) -> bytes:
        return b""


class _Csv:
    def __init__(self, columns: Sequence[Column]) -> None:
        self._names = [c.name for c in columns]
        self._header = True

    def write(self, rows: Sequence[dict[str, Any]]) -> bytes:
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\r\n")
        if self._header:
            w.writerow(self._names)
            self._header = False
        for r in rows:
            w.writerow(["" if r[n] is None else _plain(r[n]) for n in self._names])
        return out.getvalue().encode()

    def close(self) -> bytes:
        return b"" if not self._header else self.write([])


class _Sink:
    """A write-only file for pyarrow whose bytes are taken out after each row group."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self._buf += data
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def take(self) -> bytes:
        out = bytes(self._buf)
        self._buf.clear()
        return out


class _Parquet:
    def __init__(self, columns: Sequence[Column]) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise ExportError(
                "Parquet export needs pyarrow, which is not installed", hint=PARQUET_HINT
            ) from exc
        types: dict[str, Callable[[], Any]] = {
            "int": pa.int64,
            "float": pa.float64,
            "text": pa.string,
            "bool": pa.bool_,
            "time": lambda: pa.timestamp("us", tz="UTC"),
        }
        self._pa = pa
        self._schema = pa.schema([(c.name, types[c.type]()) for c in columns])
        self._sink = _Sink()
        self._writer = pq.ParquetWriter(pa.PythonFile(self._sink, mode="w"), self._schema)

    def write(self, rows: Sequence[dict[str, Any]]) -> bytes:
        self._writer.write_table(self._pa.Table.from_pylist(list(rows), schema=self._schema))
        return self._sink.take()

    def close(self) -> bytes:
        self._writer.close()
        return self._sink.take()


def make_writer(kind: str, fmt: str) -> Writer:
    """A writer of ``kind`` rows in ``fmt`` (raises ExportError for Parquet without pyarrow)."""
    columns = COLUMNS[kind]
    if fmt == "ndjson":
        return _Ndjson(columns)
    if fmt == "csv":
        return _Csv(columns)
    if fmt == "parquet":
        return _Parquet(columns)
    raise ExportError(f"unknown export format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
