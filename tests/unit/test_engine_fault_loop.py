"""The main loop's reaction to errors, with the timing shrunk: a data error quarantines and goes on at
once, a recurring unexpected error stops the process after ``FATAL_STREAK`` in a row (and only then),
a lost connection never does. The database is replaced by a script of answers; the SQL side of the same
behaviour runs against PostgreSQL in tests/db/test_fault_isolation.py and tests/e2e."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import errors

import dispatcher.engine as engine_mod
from dispatcher.engine import Engine
from dispatcher.faults import FATAL_STREAK
from dispatcher.models import RoundFault
from tests.support.dispatch import fast_settings


class ScriptedRepo:
    """``dispatch_round`` answers from ``script(n)`` (an exception to raise, or None for an empty round)."""

    def __init__(self, script: Callable[[int], BaseException | None]) -> None:
        self.script = script
        self.rounds = 0
        self.isolations = 0
        self.stop = asyncio.Event()

    async def dispatch_round(self, *_: Any) -> tuple[int, bool, list[Any]]:
        self.rounds += 1
        if self.rounds >= 40:
            self.stop.set()
        exc = self.script(self.rounds)
        if exc is not None:
            raise exc
        return 0, False, []

    async def isolate_round_faults(self, *_: Any) -> list[RoundFault]:
        self.isolations += 1
        return [RoundFault(self.isolations, "claim", "22003", "integer out of range")]

    async def set_idle(self, _idle: bool) -> None:
        return None

    async def seconds_to_next_wakeup(self) -> float | None:
        return 0.001


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_mod, "_FAULT_BACKOFF_S", 0.001)
    monkeypatch.setattr(engine_mod, "_FAULT_BACKOFF_MAX_S", 0.002)
    monkeypatch.setattr(engine_mod, "_BACKOFF_MAX_S", 0.002)


def engine(repo: ScriptedRepo) -> Engine:
    settings = fast_settings("postgresql://unused/db", WHK_POLL_INTERVAL="0.01")
    return Engine(settings, repo, sender=None, dispatcher_id="t")  # type: ignore[arg-type]


async def test_a_recurring_unexpected_error_stops_the_loop_after_the_streak(caplog: pytest.LogCaptureFixture):
    repo = ScriptedRepo(lambda n: errors.UndefinedFunction("function whk.dispatch_round does not exist"))
    eng = engine(repo)
    with pytest.raises(errors.UndefinedFunction):
        await asyncio.wait_for(eng._main_loop(repo.stop), 10)
    assert repo.rounds == FATAL_STREAK
    assert eng.last_error is not None and "42883" in eng.last_error
    logged = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert len(logged) == FATAL_STREAK - 1 and all(r.exc_info for r in logged)


async def test_unexpected_errors_with_successes_between_never_stop_it():
    repo = ScriptedRepo(lambda n: KeyError("bug") if n % 3 else None)
    eng = engine(repo)
    await asyncio.wait_for(eng._main_loop(repo.stop), 10)  # returns when the script sets stop
    assert repo.rounds >= 40


async def test_lost_connections_never_stop_it():
    repo = ScriptedRepo(lambda n: psycopg.OperationalError("server closed the connection unexpectedly"))
    eng = engine(repo)
    await asyncio.wait_for(eng._main_loop(repo.stop), 10)
    assert repo.rounds >= 40 and repo.isolations == 0


async def test_a_data_error_is_isolated_and_the_next_round_runs_at_once():
    repo = ScriptedRepo(lambda n: errors.NumericValueOutOfRange("integer out of range") if n <= 3 else None)
    eng = engine(repo)
    await asyncio.wait_for(eng._main_loop(repo.stop), 10)
    assert repo.isolations == 3 and eng.stats["quarantined"] == 3
    assert eng.last_error is None  # culprits were found: nothing unexplained to show
