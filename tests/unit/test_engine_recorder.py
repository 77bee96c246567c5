"""The recorder's linger: outcomes are flushed in groups, but never held when someone waits for them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

import dispatcher.engine as engine_mod
from dispatcher.engine import Engine
from dispatcher.models import AttemptLog, DeliveryOutcome, Recorded, RequestOutcome
from tests.support.dispatch import fast_settings
from tests.support.wait import async_wait_for


class FakeRepo:
    """Only what the recorder calls: every flush is kept, in order."""

    def __init__(self) -> None:
        self.flushes: list[list[int]] = []
        self.flushed = asyncio.Event()

    async def record(self, requests: list[RequestOutcome]) -> Recorded:
        self.flushes.append([d.id for r in requests for d in r.deliveries])
        self.flushed.set()
        return Recorded(applied=sum(len(r.deliveries) for r in requests), transitions=[])


def outcome(*ids: int, success: bool = True) -> RequestOutcome:
    attempt = AttemptLog(
        webhook_id=1,
        success=success,
        failure=not success,
        gone=False,
        outcome="delivered",
        request_method="POST",
        request_url="https://example.com/hook",
        started_at=datetime.now(UTC),
    )
    return RequestOutcome(
        attempt=attempt,
        deliveries=tuple(DeliveryOutcome(id=i, attempt_no=1, state="delivered") for i in ids),
    )


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> tuple[Engine, FakeRepo]:
    # A calm linger far longer than the test: any flush seen below was caused by the rule under test.
    monkeypatch.setattr(engine_mod, "_RECORD_LINGER_CALM_S", 60.0)
    repo = FakeRepo()
    eng = Engine(fast_settings("postgresql://unused/db"), repo, sender=None, dispatcher_id="t")  # type: ignore[arg-type]
    eng._more_due = False  # nothing is waiting on caps or lanes
    return eng, repo


async def _run_recorder(eng: Engine) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    return stop, asyncio.create_task(eng._recorder(stop))


async def test_calm_outcomes_linger_and_flush_together(engine: tuple[Engine, FakeRepo]) -> None:
    eng, repo = engine
    stop, task = await _run_recorder(eng)
    for i in range(1, 4):
        eng.queue_outcome(outcome(i), urgent=False)
    # The recorder took the first outcome and is lingering on it (the others stay queued): no flush yet.
    await async_wait_for(lambda: eng._outcomes.qsize() == 2, 5, "the recorder to take the first outcome")
    await asyncio.sleep(0)
    assert repo.flushes == [], "nothing waits for these outcomes: the recorder keeps lingering"
    # An ordered lane's outcome ends the linger, and everything queued goes in the same flush.
    eng.queue_outcome(outcome(4), urgent=True)
    await asyncio.wait_for(repo.flushed.wait(), 5)
    assert repo.flushes == [[1, 2, 3, 4]]
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_due_work_waiting_shortens_the_linger(engine: tuple[Engine, FakeRepo]) -> None:
    eng, repo = engine
    eng._more_due = True  # deliveries are held back by caps or lanes that these outcomes free
    stop, task = await _run_recorder(eng)
    eng.queue_outcome(outcome(7), urgent=False)
    await asyncio.wait_for(repo.flushed.wait(), 5)
    assert repo.flushes == [[7]]
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_a_full_group_flushes_without_lingering(engine: tuple[Engine, FakeRepo]) -> None:
    eng, repo = engine
    stop, task = await _run_recorder(eng)
    big = list(range(1, engine_mod._RECORD_GROUP + 1))
    eng.queue_outcome(outcome(*big), urgent=False)
    await asyncio.wait_for(repo.flushed.wait(), 5)
    assert repo.flushes == [big]
    assert eng._queued == 0
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_stop_flushes_what_is_queued(engine: tuple[Engine, FakeRepo]) -> None:
    eng, repo = engine
    stop, task = await _run_recorder(eng)
    eng.queue_outcome(outcome(9), urgent=False)
    await async_wait_for(eng._outcomes.empty, 5, "the recorder to take the outcome and linger")
    assert repo.flushes == []
    stop.set()
    await asyncio.wait_for(task, 5)
    assert repo.flushes == [[9]]


class RoundRepo(FakeRepo):
    """Also answers dispatch_round (nothing to route or claim), keeping the ``finished`` it was given."""

    def __init__(self, *, fail_records: bool = False) -> None:
        super().__init__()
        self.finished_seen: list[list[int]] = []
        self.fail_records = fail_records

    async def dispatch_round(
        self, route_limit: int, claim_limit: int, lease_s: float, finished: list[int]
    ) -> tuple[int, bool, list[Any]]:
        self.finished_seen.append(list(finished))
        return 0, False, []

    async def record(self, requests: list[RequestOutcome]) -> Recorded:
        if self.fail_records:
            raise psycopg.OperationalError("server closed the connection")
        return await super().record(requests)


async def test_rounds_pass_finished_unrecorded_deliveries_until_they_are_written() -> None:
    """The claim's in-flight caps skip successful requests whose outcome is still queued (p_finished)."""
    repo = RoundRepo()
    eng = Engine(fast_settings("postgresql://unused/db"), repo, sender=None, dispatcher_id="t")  # type: ignore[arg-type]
    await eng._round()
    eng.queue_outcome(outcome(5, 3), urgent=False)
    eng.queue_outcome(outcome(8), urgent=False)
    # A failed request keeps its slot until written: the breaker must count it before the next request.
    eng.queue_outcome(outcome(9, success=False), urgent=False)
    await eng._round()
    await eng._record(eng._take_queued())
    await eng._round()
    assert repo.finished_seen == [[], [3, 5, 8], []]
    assert repo.flushes == [[5, 3, 8, 9]]


async def test_outcomes_given_up_on_stop_counting_as_finished() -> None:
    # Their lease expires and they are reclaimed: the cap must count them again meanwhile.
    repo = RoundRepo(fail_records=True)
    eng = Engine(fast_settings("postgresql://unused/db"), repo, sender=None, dispatcher_id="t")  # type: ignore[arg-type]
    eng.queue_outcome(outcome(4), urgent=False)
    await eng._record(eng._take_queued(), attempts=1)
    await eng._round()
    assert repo.finished_seen == [[]]
    assert repo.flushes == []


def test_fake_repo_is_what_the_recorder_uses() -> None:
    # The recorder only calls Repository.record; keep the fake honest if that changes.
    from dispatcher.repository import Repository

    assert callable(Repository.record)
    params: Any = Repository.record.__code__.co_varnames[:2]
    assert params == ("self", "requests")
    round_params: Any = Repository.dispatch_round.__code__.co_varnames[:5]
    assert round_params == ("self", "route_limit", "claim_limit", "lease_s", "finished")
