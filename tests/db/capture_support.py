"""Helpers shared by the capture tests (tests/db/test_capture*.py)."""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parents[2]
DEMO_SQL = REPO / "sql" / "demo" / "erp.sql"

# A schema whose functions and operators shadow those the wake-up test calls and raise when used: code
# that names them unqualified fails once a caller puts `evil` first in its search_path.
HIJACKERS = """
CREATE SCHEMA evil;
CREATE FUNCTION evil.boom() RETURNS void LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'hijacked'; END$$;
CREATE FUNCTION evil.pg_sequence_last_value(regclass) RETURNS bigint LANGUAGE plpgsql
    AS $$BEGIN PERFORM evil.boom(); RETURN NULL; END$$;
CREATE FUNCTION evil.pg_notify(text, text) RETURNS void LANGUAGE plpgsql
    AS $$BEGIN PERFORM evil.boom(); END$$;
CREATE FUNCTION evil.to_timestamp(double precision) RETURNS timestamptz LANGUAGE plpgsql
    AS $$BEGIN PERFORM evil.boom(); RETURN NULL; END$$;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql
    AS $$BEGIN PERFORM evil.boom(); RETURN NULL; END$$;
CREATE FUNCTION evil.tsgt(timestamptz, timestamptz) RETURNS boolean LANGUAGE plpgsql
    AS $$BEGIN PERFORM evil.boom(); RETURN NULL; END$$;
CREATE OPERATOR evil.> (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = evil.tsgt);
"""


def install_demo(conn: psycopg.Connection[Any]) -> None:
    """Install the optional demo ERP (sql/demo/erp.sql) into the connection's database."""
    conn.execute(DEMO_SQL.read_text(encoding="utf-8").encode())


def outbox(conn: psycopg.Connection[Any], where: str = "TRUE") -> list[dict[str, Any]]:
    """Outbox rows in id order with their delivered body (whk.outbox_events.payload, built by
    whk.event_envelope); the payload is re-parsed from its text so it is checked as strict JSON."""
    cur = conn.execute(
        "SELECT id, event_id, event_type, event_version, event_key, payload::text, source_table, operation,"
        f" txid::text, deliver_at, status FROM whk.outbox_events WHERE {where} ORDER BY id"
    )
    names = [d.name for d in cur.description or []]
    rows = []
    for values in cur.fetchall():
        row = dict(zip(names, values, strict=True))
        row["payload"] = json.loads(row.pop("payload"), parse_constant=_refuse_constant)
        rows.append(row)
    return rows


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"payload is not strict JSON: bare {name}")


class Notifications:
    """Collect NOTIFYs of channel whk_outbox on a separate connection."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute("LISTEN whk_outbox")
        self.received: list[str] = []
        self._lock = threading.Lock()

    def drain(self, timeout: float = 30.0) -> list[str]:
        """Every notification committed before this call, and nothing else.

        PostgreSQL delivers notifications in commit order, so a marker this connection NOTIFYs now
        arrives after every notification committed before it: reading up to the marker sees all of
        them without waiting a fixed time for stragglers."""
        marker = f"drain-{uuid.uuid4().hex}"
        self.conn.execute("SELECT pg_notify('whk_outbox', %s)", (marker,))
        for n in self.conn.notifies(timeout=timeout):
            if n.payload == marker:
                break
            with self._lock:
                self.received.append(n.payload)
        else:
            raise AssertionError(f"our own NOTIFY did not come back within {timeout} s")
        with self._lock:
            got, self.received = self.received, []
        return got

    def close(self) -> None:
        self.conn.close()


class _Rollback(Exception):
    """Raised inside a transaction block to make psycopg roll it back."""


def run_and_roll_back(conn: psycopg.Connection[Any], *statements: str) -> None:
    """Execute ``statements`` in one transaction, then roll it back (the ERP changed its mind)."""
    with contextlib.suppress(_Rollback), conn.transaction():
        for statement in statements:
            conn.execute(statement)
        raise _Rollback


def register_dispatcher(
    conn: psycopg.Connection[Any], dispatcher_id: str = "d1", *, idle: bool = False
) -> None:
    conn.execute(
        "INSERT INTO whk.dispatchers (id, hostname, pid, version, idle) VALUES (%s, 'test', 1, 'test', %s)",
        (dispatcher_id, idle),
    )
