"""``whk export deliveries|events``: history for analytics platforms, streamed to a file or stdout.

    whk export deliveries --since 7d --format parquet -o deliveries.parquet
    whk export events --since 2026-12-01 --until 2026-12-02 --format csv > events.csv
    whk export deliveries --since 24h | jq -c 'select(.status == "dead")'

Rows are read a page at a time (``whk.export``) and written as they come; a progress bar goes to stderr.
``--since`` takes an ISO date or time (UTC when no offset is given) or an age: ``30m``, ``24h``, ``7d``.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from whk.db import check_schema_version, connect
from whk.errors import WhkError
from whk.export import FORMATS, KINDS, count, make_writer, pages
from whk.settings import Settings

__all__ = ["add_export_parser", "parse_since", "progress_bar"]

_AGE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class ExportUsageError(WhkError):
    """A bad --since/--until or output choice."""


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``7d`` → now minus 7 days; an ISO date or time → that instant (UTC without an offset)."""
    m = _AGE.match(text.strip())
    if m:
        base = now or datetime.now(UTC)
        return base - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ExportUsageError(
            f"cannot read the time {text!r}",
            hint="give an ISO date/time (2026-12-01T08:00) or an age (24h, 7d)",
        ) from exc
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def progress_bar(done: int, total: int, kind: str, width: int = 30) -> str:
    """``exporting deliveries [#######-----]  700/1000  70%``."""
    share = 1.0 if total <= 0 else min(1.0, done / total)
    filled = int(share * width)
    return f"exporting {kind} [{'#' * filled}{'-' * (width - filled)}] {done}/{max(total, done)} {share:4.0%}"


def run_export(
    conn: Any,
    kind: str,
    fmt: str,
    out: BinaryIO,
    err: TextIO,
    *,
    since: datetime | None,
    until: datetime | None = None,
) -> int:
    """Write the export to ``out`` with a progress bar on ``err``; returns the number of rows."""
    writer = make_writer(kind, fmt)  # before any query: a missing pyarrow is said at once
    total = count(conn, kind, since=since, until=until)
    done = 0
    err.write(progress_bar(0, total, kind))
    err.flush()
    for page in pages(conn, kind, since=since, until=until):
        out.write(writer.write(page))
        done += len(page)
        err.write("\r" + progress_bar(done, total, kind))
        err.flush()
    out.write(writer.close())
    out.flush()
    err.write(f"\nexported {done} {kind} ({fmt})\n")
    err.flush()
    return done


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    since = parse_since(args.since) if args.since else None
    until = parse_since(args.until) if args.until else None
    if args.output is None and args.format == "parquet" and sys.stdout.isatty():
        raise ExportUsageError(
            "Parquet is binary: not written to a terminal", hint="pass -o FILE or redirect stdout"
        )
    with connect(settings) as conn:
        check_schema_version(conn)
        # One snapshot for the count and every page: the progress total is what gets exported.
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            if args.output is None:
                run_export(
                    conn, args.kind, args.format, sys.stdout.buffer, sys.stderr, since=since, until=until
                )
            else:
                with Path(args.output).open("wb") as out:
                    run_export(conn, args.kind, args.format, out, sys.stderr, since=since, until=until)
    return 0


def add_export_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="export delivery or event history (ndjson, csv, parquet)")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("--since", help="rows created at or after: ISO date/time or an age (24h, 7d); default all")
    p.add_argument("--until", help="rows created before (same forms)")
    p.add_argument("--format", choices=FORMATS, default="ndjson", help="default ndjson")
    p.add_argument("-o", "--output", help="file to write (default stdout)")
    p.set_defaults(func=cmd_export)
