"""``whk replay WEBHOOK --since … [--until …] [--type …] [--where …] [--dry-run]``: send a webhook its past
events again from the shell, like ``POST /api/whk/webhooks/{id}/replay``: queue the replay
(``whk.replay_start``), then follow its progress (done/total) until the job worker finishes it.

Times are ISO 8601 (``2026-12-01T00:00:00Z``; no zone = UTC) or ago-durations (``90m``, ``12h``, ``7d``).
Runs with the CLI's database role (a DBA's), so it is not tenant-scoped: the API is the tenant's way.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from whk.db import check_schema_version, connect
from whk.errors import WhkError
from whk.settings import Settings

__all__ = ["add_replay_parser", "cmd_replay", "parse_when"]

_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_FINAL = ("done", "cancelled", "failed")
_WAIT_HINT_S = 30.0


def parse_when(text: str, *, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (UTC when it names no zone) or a duration ago (``90m``, ``12h``, ``7d``)."""
    ago = _AGO.match(text.strip())
    if ago:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[ago.group(2)]: float(ago.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (ISO 8601, or 90m / 12h / 7d ago)") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _bar(done: int, total: int, width: int = 30) -> str:
    share = 1.0 if total == 0 else min(1.0, done / total)
    full = round(share * width)
    return f"[{'#' * full}{'.' * (width - full)}] {done}/{total}"


def _start(conn: psycopg.Connection[Any], args: argparse.Namespace, until: datetime) -> int:
    params = {
        "webhook_id": args.webhook,
        "since": args.since,
        "until": until,
        "types": args.type or [],
        "predicate": args.where,
    }
    try:
        if args.dry_run:
            row = conn.execute(
                "SELECT count(*) FROM whk.replay_events(%(webhook_id)s, %(since)s, %(until)s,"
                " %(types)s::text[], %(predicate)s::jsonpath)",
                params,
            ).fetchone()
        else:
            row = conn.execute(
                "SELECT whk.replay_start(%(webhook_id)s, %(since)s, %(until)s, %(types)s::text[],"
                " %(predicate)s::jsonpath, 'cli:' || current_user)",
                params,
            ).fetchone()
    except (psycopg.errors.InvalidParameterValue, psycopg.errors.NoDataFound) as exc:
        raise WhkError(exc.diag.message_primary or str(exc), hint=exc.diag.message_hint) from exc
    except psycopg.errors.SyntaxError as exc:
        raise WhkError(f"--where: {exc.diag.message_primary}", hint="an SQL/JSON path predicate") from exc
    assert row is not None
    return int(row[0])


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    until = args.until or datetime.now(UTC)
    with connect(settings) as conn:
        check_schema_version(conn)
        if args.dry_run:
            n = _start(conn, args, until)
            print(f"would replay {n} events to webhook {args.webhook} (dry run: nothing queued)", flush=True)
            return 0
        replay_id = _start(conn, args, until)
        print(f"replay {replay_id} queued (cancel: SELECT whk.replay_cancel({replay_id}))", flush=True)
        if args.no_wait:
            return 0
        started = time.monotonic()
        hinted = False
        tty = sys.stdout.isatty()
        while True:
            row = conn.execute(
                "SELECT state, done, total, error FROM whk.replays WHERE id = %s", (replay_id,)
            ).fetchone()
            assert row is not None
            state, done, total, error = row
            line = f"replay {replay_id} {state:<9} {_bar(int(done), int(total))}"
            print(f"\r{line}" if tty else line, end="" if tty else "\n", flush=True)
            if state in _FINAL:
                break
            if state == "queued" and not hinted and time.monotonic() - started > _WAIT_HINT_S:
                print(
                    "\nstill queued: is a job worker running (`whk worker` or `whk dispatcher`)?", flush=True
                )
                hinted = True
            time.sleep(args.interval)
        if tty:
            print(flush=True)
        if state == "failed":
            raise WhkError(f"replay {replay_id} failed: {error}", hint="see the worker's log")
    return 0


def _interval(text: str) -> float:
    value = float(text)
    if not 0.1 <= value <= 60:
        raise argparse.ArgumentTypeError("between 0.1 and 60 seconds")
    return value


def add_replay_parser(sub: Any) -> None:
    """Register ``whk replay`` on the CLI's sub-parsers."""
    p = sub.add_parser(
        "replay", help="send a webhook its past events again (still in outbox retention), with progress"
    )
    p.add_argument("webhook", type=int, help="webhook id")
    p.add_argument("--since", type=parse_when, required=True, help="from (ISO 8601, or 90m / 12h / 7d ago)")
    p.add_argument("--until", type=parse_when, default=None, help="to, excluded (default: now)")
    p.add_argument("--type", action="append", metavar="T", help="event type or pattern (repeat)")
    p.add_argument("--where", default=None, help="SQL/JSON path predicate on the body: '$.data.total > 100'")
    p.add_argument("--dry-run", action="store_true", help="count the events; queue nothing")
    p.add_argument("--no-wait", action="store_true", help="queue it and return (no progress bar)")
    p.add_argument("--interval", type=_interval, default=0.5, help="seconds between progress polls")
    p.set_defaults(func=cmd_replay)
