"""``whk tail``: live deliveries from the database, one line per attempt, filterable.

    whk tail                                  # follow new attempts (Ctrl-C stops)
    whk tail --webhook 5 --status failed      # one webhook's failures (retry, throttle, blocked)
    whk tail --event-type 'order.*' --last 20 # the last 20 attempts first, then follow
    whk tail --json                           # one JSON object per line, for jq

How it follows: it **polls the attempt log** (``whk_03_entregas_tentativas``, one row per HTTP request,
written by the dispatchers' outcome flushes) with a keyset cursor on its id, every ``--interval`` seconds.
Not LISTEN/NOTIFY: a NOTIFY per flush would cost the hot path (every notifying commit takes a
cluster-wide lock) for a tool that is usually not running; a poll is one indexed range scan.

Ids are assigned before commit, so a flush committing late can land below the newest id seen. The
cursor therefore only moves over ids it has seen: a hole (a flush still committing, or one rolled back)
holds it for up to ``GAP_WAIT_S`` while the rows above it are shown once each; after that the hole is
skipped (a rolled-back flush never fills it).

Against ``make up`` (no WHK_DATABASE_URL) it reads the private server in WHK_DATA_DIR.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, TextIO

from whk.db import check_schema_version, connect
from whk.settings import Settings
from whk.sqlfiles import load_queries

__all__ = ["GAP_WAIT_S", "Cursor", "Filters", "Tailer", "add_tail_parser", "format_line", "tail"]

GAP_WAIT_S: Final = 2.0
_BATCH: Final = 500
# --status failed: the outcomes that count as a failed attempt (dispatcher.classify.is_failure).
_FAILED: Final = frozenset({"retry", "throttle", "blocked"})
OUTCOMES: Final = ("delivered", "awaiting_ack", "retry", "throttle", "gone", "blocked")


@dataclass
class Cursor:
    """Keyset position over the attempt log that waits briefly for holes (see the module docstring)."""

    position: int
    gap_wait_s: float = GAP_WAIT_S
    _seen: set[int] = field(default_factory=set)
    _gap_since: float | None = None

    def accept(self, ids: Sequence[int], now: float) -> list[int]:
        """The ids of ``ids`` not seen before (to show); then move the cursor as far as it may."""
        fresh = [i for i in ids if i > self.position and i not in self._seen]
        self._seen.update(fresh)
        self._advance(now)
        return fresh

    def _advance(self, now: float) -> None:
        while True:
            while self.position + 1 in self._seen:
                self.position += 1
                self._seen.discard(self.position)
            if not self._seen:
                self._gap_since = None
                return
            if self._gap_since is None:
                self._gap_since = now
                return
            if now - self._gap_since < self.gap_wait_s:
                return
            # The hole did not fill in time: skip it.
            self.position = min(self._seen) - 1
            self._gap_since = None


@dataclass(frozen=True)
class Filters:
    webhooks: frozenset[int] = frozenset()
    statuses: frozenset[str] = frozenset()
    event_types: tuple[str, ...] = ()

    def match(self, row: dict[str, Any]) -> bool:
        if self.webhooks and row["webhook_id"] not in self.webhooks:
            return False
        if self.statuses:
            outcome = row["outcome"]
            code = str(row["response_status"]) if row["response_status"] is not None else ""
            ok = (
                outcome in self.statuses
                or code in self.statuses
                or ("failed" in self.statuses and outcome in _FAILED)
                or (code and f"{code[0]}xx" in self.statuses)
            )
            if not ok:
                return False
        if self.event_types:
            kind = row["event_type"] or ""
            return any(fnmatch.fnmatchcase(kind, p) for p in self.event_types)
        return True


def format_line(row: dict[str, Any]) -> str:
    """``time outcome status latency webhook delivery#attempt event_type event_id``."""
    started: datetime = row["started_at"]
    status = row["response_status"] if row["response_status"] is not None else row["error_class"] or "-"
    latency = f"{row['duration_ms']:.1f}ms" if row["duration_ms"] is not None else "-"
    batch = f" (+{row['deliveries'] - 1} in batch)" if row["deliveries"] > 1 else ""
    return (
        f"{started.isoformat(timespec='milliseconds')}  {row['outcome']:<12} {status!s:<5} {latency:>9}  "
        f"webhook {row['webhook_id']}  delivery {row['delivery_id']}#{row['attempt_no']}{batch}  "
        f"{row['event_type'] or '-'}  {row['event_id'] or '-'}"
    )


def _json_line(row: dict[str, Any]) -> str:
    return json.dumps(row, default=str, separators=(",", ":"))


class Tailer:
    """One tail over a connection: ``poll()`` prints what was recorded since the previous poll."""

    def __init__(
        self,
        conn: Any,
        filters: Filters,
        out: TextIO,
        *,
        last: int = 0,
        as_json: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._conn = conn
        self._filters = filters
        self._out = out
        self._json = as_json
        self._clock = clock
        self._q = load_queries("whk_cli", "tail.sql")
        row = conn.execute(self._q["start_after"], {"last": max(0, last)}).fetchone()
        self.cursor = Cursor(int(row[0]) if row else 0)

    def poll(self) -> tuple[int, bool]:
        """(lines printed, whether a full batch came back: poll again at once)."""
        cur = self._conn.execute(self._q["attempts_after"], {"after": self.cursor.position, "limit": _BATCH})
        names = [d.name for d in cur.description or ()]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        fresh = set(self.cursor.accept([r["id"] for r in rows], self._clock()))
        printed = 0
        for r in rows:
            if r["id"] in fresh and self._filters.match(r):
                self._out.write((_json_line(r) if self._json else format_line(r)) + "\n")
                printed += 1
        self._out.flush()
        return printed, len(rows) >= _BATCH


def tail(
    conn: Any,
    filters: Filters,
    out: TextIO,
    *,
    last: int = 0,
    interval: float = 0.5,
    as_json: bool = False,
    once: bool = False,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Print attempts as they are recorded until ``stop()`` (or after one pass with ``once``); returns how
    many lines were printed."""
    tailer = Tailer(conn, filters, out, last=last, as_json=as_json)
    printed = 0
    while True:
        n, more = tailer.poll()
        printed += n
        if once or stop():
            return printed
        if not more:
            time.sleep(interval)


def _tail_settings(settings: Settings) -> Settings:
    """Without WHK_DATABASE_URL: the private server of `whk up` (make up) in WHK_DATA_DIR."""
    if settings.core.database_url:
        return settings
    from whk.pgserver import PrivateServer

    server = PrivateServer(settings.core.data_dir)
    if not (server.pgdata / "PG_VERSION").exists():
        return settings  # connect() then says WHK_DATABASE_URL is unset, with its hint
    return settings.with_database_url(server.dsn())


def cmd_tail(settings: Settings, args: argparse.Namespace) -> int:
    filters = Filters(
        webhooks=frozenset(args.webhook or ()),
        statuses=frozenset(s.lower() for s in args.status or ()),
        event_types=tuple(args.event_type or ()),
    )
    with connect(_tail_settings(settings)) as conn:
        check_schema_version(conn)
        try:
            tail(
                conn,
                filters,
                sys.stdout,
                last=args.last,
                interval=args.interval,
                as_json=args.json,
                once=args.once,
            )
        except KeyboardInterrupt:
            return 0
    return 0


def add_tail_parser(sub: Any) -> None:
    p = sub.add_parser(
        "tail",
        help="stream live delivery attempts (event, webhook, status, latency) from the database",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
    )
    p.add_argument("--webhook", type=int, action="append", metavar="ID", help="only this webhook (repeat)")
    p.add_argument(
        "--status",
        action="append",
        metavar="S",
        help=f"only these: an outcome ({', '.join(OUTCOMES)}), failed, an HTTP code (503) or class (5xx)",
    )
    p.add_argument("--event-type", action="append", metavar="GLOB", help="only these event types ('order.*')")
    p.add_argument("--last", type=int, default=0, metavar="N", help="show the last N attempts first")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between polls (default 0.5)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--once", action="store_true", help="print what is there and exit")
    p.set_defaults(func=cmd_tail)
