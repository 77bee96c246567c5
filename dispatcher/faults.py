"""Which database errors are about one webhook's data, and which are not. Pure: no I/O.

A dispatcher round (``whk.dispatch_round``) and an outcome flush (``whk.record_outcomes``) are set-based
statements over many webhooks: one webhook's bad row fails them for all. The engine reacts by class:

==========================  =====================================================================
error                       what the engine does
==========================  =====================================================================
about a webhook's data      find the culprit (``whk.isolate_round_faults`` for a round; one call per
(``is_webhook_fault``)      webhook for a flush), quarantine it, go on serving the others at once.
                            SQLSTATE classes 22 data exception, 23 integrity constraint, 2F SQL
                            routine, 38/39 external routine, P0 PL/pgSQL (RAISE, ASSERT), 54 program
                            limit, XX internal (corrupt data) — what a row's values can provoke.
                            If no single webhook reproduces it (an event, a global setting), the
                            failing stage is switched off with backoff and the error is shown in the
                            heartbeat row (health: degraded), while the other stage keeps working.
not about one webhook       ``TRANSIENT_DB_ERRORS`` (connection lost, server restart, pool timeout,
(transient)                 deadlock, statement timeout): retry with backoff, as before.
anything else               a programming error or a schema the code does not expect (42xxx, a
                            Python exception): logged with its traceback, retried with backoff;
                            ``FATAL_STREAK`` in a row with no successful round in between stop the
                            process (exit 1), so a supervisor restarts it and shows it failing,
                            instead of it spinning silently.
==========================  =====================================================================
"""

from __future__ import annotations

from typing import Final

import psycopg

__all__ = ["FATAL_STREAK", "WEBHOOK_FAULT_CLASSES", "describe", "is_webhook_fault"]

# SQLSTATE classes a webhook's row can provoke inside the delivery statements (see whk.fault_probe, which
# catches the same ones).
WEBHOOK_FAULT_CLASSES: Final = frozenset({"22", "23", "2F", "38", "39", "P0", "54", "XX"})
# Unexpected failures in a row (no successful round between them) after which the dispatcher exits.
FATAL_STREAK: Final = 10


def is_webhook_fault(exc: BaseException) -> bool:
    """True when ``exc`` is a database error whose class a webhook's data can cause."""
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    return state is not None and state[:2] in WEBHOOK_FAULT_CLASSES


def describe(exc: BaseException) -> str:
    """One line for logs and the heartbeat: SQLSTATE (if any), the error's class and its first line."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    state = exc.sqlstate if isinstance(exc, psycopg.Error) else None
    prefix = f"{state} " if state else ""
    return f"{prefix}{type(exc).__name__}: {first}" if first else f"{prefix}{type(exc).__name__}"
