"""A scheduled job runs once per tick of its schedule, also when pgqueuer's pick lands on the tick it
picks (its ``next_run`` set to that very second: the schedule is due again at once)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from pgqueuer.domain.models import Schedule

from ops.worker import once_per_tick

PICKED = datetime(2026, 12, 7, 17, 4, 1, 1000, tzinfo=UTC)


def schedule(next_run: datetime) -> Schedule:
    return Schedule(
        id=1,
        expression="* * * * * */1",
        heartbeat=PICKED,
        created=PICKED - timedelta(minutes=1),
        updated=PICKED,
        next_run=next_run,
        last_run=None,
        status="picked",
        entrypoint="evaluate_alerts",
    )


def runs_for(next_run: datetime) -> int:
    ran: list[Schedule] = []

    async def job(s: Schedule) -> None:
        ran.append(s)

    asyncio.run(once_per_tick("evaluate_alerts", job)(schedule(next_run)))
    return len(ran)


def test_a_pick_that_sets_the_next_tick_runs_the_job():
    assert runs_for(PICKED.replace(microsecond=0) + timedelta(seconds=1)) == 1


def test_a_pick_whose_next_run_is_the_tick_it_picks_is_skipped():
    # pgqueuer computed the delay just before the tick and ran its UPDATE just after: next_run = 17:04:01.
    assert runs_for(PICKED.replace(microsecond=0)) == 0
