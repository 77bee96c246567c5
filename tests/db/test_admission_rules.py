"""One table of admission cases, answered by both functions that decide whether a delivery goes out now.

``whk.route_and_take`` takes fresh deliveries at routing time (inserted already in flight) only when the
fair claim would hand them out at once; ``whk.claim_deliveries`` is that fair claim. Each case below is a
setup (webhook, consumer, runtime state, deliveries that exist already, locks held elsewhere) plus the
fresh events, and the answer of each function: how many of the fresh deliveries go out now (the rest stay
pending), and for the claim how many of the older ones do.

Run against route_and_take: set up, emit the fresh events, call ``route_and_take(1000, 'd1', slots, 30,
finished)``. Run against the claim: set up, emit, route them with nothing taken, call
``claim_deliveries('d1', slots, 30, finished)``. Each run gets its own database.

Where the two answers differ the case says why in ``differs`` (and in its test id): route_and_take
refuses anything that needs state only the claim keeps (token buckets, quotas, breaker probes, ordered
lanes, partial batches, a due backlog to serve first) and leaves it pending; whk.dispatch_round runs the
claim right after it in the same round trip, so such a delivery still goes out in that round.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.support.delivery import emit, make_consumer, make_webhook, route

pytestmark = pytest.mark.db

URL = "http://127.0.0.1:9/hook"
LATER = timedelta(hours=1)
EARLIER = -timedelta(hours=1)
SLOW = 0.001  # a token bucket's rate: one token per 1,000 s, so nothing refills while a test runs


@dataclass(frozen=True)
class Older:
    """Deliveries of the webhook that exist before the fresh events: routed earlier, then put in a state."""

    n: int
    status: str = "pending"  # pending | in_flight | awaiting_ack
    due: bool = True  # pending: due now, or an hour from now (a scheduled retry)
    by: str = "d1"  # in_flight: the dispatcher holding them
    finished: bool = (
        False  # in_flight: listed in the caller's p_finished (request ended, outcome not written)
    )
    batch: bool = False  # in_flight: one batch request (one batch_id) instead of one request each
    key: str | None = None  # the event key (an ordered webhook's lane)


@dataclass(frozen=True)
class Case:
    name: str
    take: int  # fresh deliveries route_and_take sends now
    claim: int  # fresh deliveries claim_deliveries sends now
    differs: str | None = None  # why the two answers differ (None: they must not)
    claim_older: int = 0  # older deliveries the claim sends now (route_and_take never touches them)
    hook: Mapping[str, Any] = field(default_factory=dict)  # whk_01_webhooks columns
    consumer: Mapping[str, Any] = field(default_factory=dict)  # whk_04_assinantes columns
    runtime: Mapping[str, Any] | None = field(default_factory=dict)  # webhook_runtime; None: no row yet
    consumer_runtime: Mapping[str, Any] | None = None  # consumer_runtime columns (row created when set)
    default_bucket: Mapping[str, Any] | None = None  # whk_05_configuracoes 'rate_limit.webhook_default'
    older: tuple[Older, ...] = ()
    # statements run after the older deliveries exist (%(hook)s = the webhook, %(consumer)s its consumer)
    then: tuple[str, ...] = ()
    fresh: int = 1
    key: str | None = None  # the fresh events' key
    deliver_at: timedelta | None = None  # the fresh events' deliver_at, relative to now
    routed: bool = True  # whether the fresh events fan out to the webhook at all
    slots: int = 10  # the caller's free request slots (p_take / p_limit)
    lock: str | None = None  # a row another transaction holds: 'webhook_runtime' | 'consumer_runtime'

    @property
    def id(self) -> str:
        return self.name if self.differs is None else f"{self.name}--{self.differs}"


CASES = [
    # --- delivery modes
    Case("immediate", take=1, claim=1),
    Case("immediate-three-events", take=3, claim=3, fresh=3),
    Case(
        "delayed-mode-with-a-delay", take=0, claim=0, hook={"delivery_mode": "delayed", "delay_seconds": 3600}
    ),
    Case(
        "delayed-mode-without-a-delay",
        take=0,
        claim=1,
        differs="take-refuses-delayed-mode-only-immediate-or-batch-is-taken",
        hook={"delivery_mode": "delayed", "delay_seconds": 0},
    ),
    Case("immediate-mode-with-a-delay", take=0, claim=0, hook={"delay_seconds": 3600}),
    Case(
        "batch-one-full-batch",
        take=2,
        claim=2,
        hook={"delivery_mode": "batch", "batch_size": 2, "batch_window_ms": 3_600_000},
        fresh=2,
    ),
    Case(
        "batch-partial-inside-its-window",
        take=0,
        claim=0,
        hook={"delivery_mode": "batch", "batch_size": 3, "batch_window_ms": 3_600_000},
        fresh=2,
    ),
    Case(
        "batch-partial-window-over",
        take=0,
        claim=2,
        differs="take-refuses-partial-batches-the-claim-owns-the-window",
        hook={"delivery_mode": "batch", "batch_size": 3, "batch_window_ms": 0},
        fresh=2,
    ),
    Case(
        "batch-full-batch-and-a-rest",
        take=2,
        claim=2,
        hook={"delivery_mode": "batch", "batch_size": 2, "batch_window_ms": 3_600_000},
        fresh=3,
    ),
    Case(
        "batch-two-full-batches",
        take=4,
        claim=2,
        differs="claim-builds-one-batch-per-webhook-per-call",
        hook={"delivery_mode": "batch", "batch_size": 2, "batch_window_ms": 3_600_000},
        fresh=4,
    ),
    Case(
        "batch-with-a-delay",
        take=0,
        claim=0,
        hook={"delivery_mode": "batch", "batch_size": 1, "delay_seconds": 3600},
    ),
    Case(
        "ordered-new-lane",
        take=0,
        claim=1,
        differs="take-refuses-ordered-lanes",
        hook={"delivery_mode": "ordered"},
        key="A",
        fresh=2,
    ),
    Case(
        "ordered-lane-head-in-flight",
        take=0,
        claim=0,
        hook={"delivery_mode": "ordered"},
        older=(Older(1, "in_flight", key="A"),),
        key="A",
    ),
    Case(
        "ordered-lane-head-awaiting-ack",
        take=0,
        claim=0,
        hook={"delivery_mode": "ordered"},
        older=(Older(1, "awaiting_ack", key="A"),),
        key="A",
    ),
    Case(
        "ordered-other-lane-busy",
        take=0,
        claim=1,
        differs="take-refuses-ordered-lanes",
        hook={"delivery_mode": "ordered"},
        older=(Older(1, "in_flight", key="A"),),
        key="B",
    ),
    Case(
        "ordered-lane-head-waiting-for-its-retry",
        take=0,
        claim=0,
        hook={"delivery_mode": "ordered"},
        older=(Older(1, due=False, key="A"),),
        key="A",
    ),
    # --- due time
    Case("deliver-at-in-the-future", take=0, claim=0, deliver_at=LATER),
    Case("deliver-at-in-the-past", take=1, claim=1, deliver_at=EARLIER),
    # --- due backlog: fresh events never overtake deliveries already waiting
    Case(
        "due-backlog",
        take=0,
        claim=1,
        claim_older=2,
        differs="take-refuses-the-claim-serves-the-backlog-first",
        older=(Older(2),),
    ),
    Case(
        "due-backlog-fills-the-slots",
        take=0,
        claim=0,
        claim_older=2,
        older=(Older(2),),
        slots=2,
    ),
    Case("pending-retry-not-due-is-no-backlog", take=1, claim=1, older=(Older(2, due=False),)),
    Case(
        "batch-due-rest-is-a-backlog",
        take=0,
        claim=1,
        claim_older=1,
        differs="take-refuses-the-claim-serves-the-backlog-first",
        hook={"delivery_mode": "batch", "batch_size": 2, "batch_window_ms": 3_600_000},
        older=(Older(1),),
        fresh=2,
    ),
    # --- circuit breaker
    Case(
        "breaker-open-probe-later",
        take=0,
        claim=0,
        runtime={"breaker_state": "open", "probe_at": LATER},
    ),
    Case(
        "breaker-open-probe-due",
        take=0,
        claim=1,
        differs="take-refuses-the-probe-is-the-claims",
        runtime={"breaker_state": "open", "probe_at": EARLIER},
        fresh=2,
    ),
    Case(
        "breaker-half-open-probe-on-the-wire",
        take=0,
        claim=0,
        runtime={"breaker_state": "half_open", "probe_until": LATER},
    ),
    Case(
        "breaker-half-open-probe-lease-over",
        take=0,
        claim=1,
        differs="take-refuses-the-probe-is-the-claims",
        runtime={"breaker_state": "half_open", "probe_until": EARLIER},
        fresh=2,
    ),
    # --- token buckets and quota
    Case(
        "webhook-bucket-with-tokens",
        take=0,
        claim=1,
        differs="take-refuses-any-token-bucket",
        hook={"rate_limit_per_second": SLOW},
        fresh=2,
    ),
    Case(
        "webhook-bucket-burst",
        take=0,
        claim=3,
        differs="take-refuses-any-token-bucket",
        hook={"rate_limit_per_second": SLOW, "rate_limit_burst": 3},
        fresh=5,
    ),
    Case(
        "webhook-bucket-empty",
        take=0,
        claim=0,
        hook={"rate_limit_per_second": SLOW},
        runtime={"tokens": 0.0, "tokens_at": timedelta(0)},
    ),
    Case(
        "default-bucket-with-tokens",
        take=0,
        claim=1,
        differs="take-refuses-any-token-bucket",
        default_bucket={"per_second": SLOW, "burst": None, "max_in_flight": 10},
        fresh=2,
    ),
    Case(
        "default-bucket-empty",
        take=0,
        claim=0,
        default_bucket={"per_second": SLOW, "burst": None, "max_in_flight": 10},
        runtime={"tokens": 0.0, "tokens_at": timedelta(0)},
    ),
    Case(
        "consumer-bucket-with-tokens",
        take=0,
        claim=1,
        differs="take-refuses-any-token-bucket",
        consumer={"rate_limit_per_second": SLOW},
        fresh=2,
    ),
    Case(
        "consumer-bucket-empty",
        take=0,
        claim=0,
        consumer={"rate_limit_per_second": SLOW},
        consumer_runtime={"tokens": 0.0, "tokens_at": timedelta(0)},
    ),
    Case(
        "consumer-quota-with-room",
        take=0,
        claim=2,
        differs="take-refuses-any-quota",
        consumer={"quota_deliveries_per_day": 2},
        fresh=3,
    ),
    Case(
        "consumer-quota-counts-a-batch-as-one-request",
        take=0,
        claim=2,
        differs="take-refuses-any-quota",
        hook={"delivery_mode": "batch", "batch_size": 2, "batch_window_ms": 3_600_000},
        consumer={"quota_deliveries_per_day": 1},
        fresh=2,
    ),
    Case(
        "consumer-quota-used-up-today",
        take=0,
        claim=0,
        consumer={"quota_deliveries_per_day": 2},
        consumer_runtime={"quota_used": 2},
    ),
    Case(
        "consumer-quota-used-up-on-an-earlier-day",
        take=0,
        claim=1,
        differs="take-refuses-any-quota",
        consumer={"quota_deliveries_per_day": 2},
        consumer_runtime={"quota_used": 2, "quota_day": -timedelta(days=2)},
    ),
    Case("consumer-burst-without-a-rate-is-no-bucket", take=1, claim=1, consumer={"rate_limit_burst": 5}),
    # --- in-flight cap (requests; a batch is one) and the caller's free slots
    Case("cap-leaves-room-for-two", take=2, claim=2, hook={"max_in_flight": 2}, fresh=3),
    Case("cap-full", take=0, claim=0, hook={"max_in_flight": 2}, older=(Older(2, "in_flight"),)),
    Case(
        "cap-full-one-finished-by-the-caller",
        take=1,
        claim=1,
        hook={"max_in_flight": 2},
        older=(Older(1, "in_flight", finished=True), Older(1, "in_flight")),
        fresh=2,
    ),
    Case(
        "cap-full-finished-by-another-dispatcher",
        take=0,
        claim=0,
        hook={"max_in_flight": 2},
        older=(Older(2, "in_flight", by="d2", finished=True),),
    ),
    Case(
        "awaiting-ack-is-off-the-cap",
        take=1,
        claim=1,
        hook={"max_in_flight": 1},
        older=(Older(1, "awaiting_ack"),),
    ),
    Case(
        "batch-cap-counts-a-batch-as-one-request",
        take=2,
        claim=2,
        hook={"delivery_mode": "batch", "batch_size": 2, "batch_window_ms": 3_600_000, "max_in_flight": 2},
        older=(Older(2, "in_flight", batch=True),),
        fresh=2,
    ),
    Case(
        "batch-cap-full",
        take=0,
        claim=0,
        hook={"delivery_mode": "batch", "batch_size": 2, "batch_window_ms": 3_600_000, "max_in_flight": 1},
        older=(Older(2, "in_flight", batch=True),),
        fresh=2,
    ),
    Case(
        "batch-cap-full-batch-finished-by-the-caller",
        take=2,
        claim=2,
        hook={"delivery_mode": "batch", "batch_size": 2, "batch_window_ms": 3_600_000, "max_in_flight": 1},
        older=(Older(2, "in_flight", batch=True, finished=True),),
        fresh=2,
    ),
    Case(
        "cap-counts-other-dispatchers-requests",
        take=1,
        claim=1,
        hook={"max_in_flight": 2},
        older=(Older(1, "in_flight", by="d2"),),
        fresh=2,
    ),
    Case("one-free-slot", take=1, claim=1, fresh=3, slots=1),
    Case(
        "batch-one-free-slot",
        take=2,
        claim=2,
        hook={"delivery_mode": "batch", "batch_size": 2, "batch_window_ms": 3_600_000},
        fresh=4,
        slots=1,
    ),
    Case("no-free-slot", take=0, claim=0, slots=0),
    # --- webhook status
    # A paused webhook is still routed to: its deliveries wait, pending, and go out after the resume.
    Case("paused", take=0, claim=0, then=("SELECT whk.pause_webhook(%(hook)s)",)),
    Case(
        "paused-with-due-deliveries",
        take=0,
        claim=0,
        older=(Older(2),),
        then=("SELECT whk.pause_webhook(%(hook)s)",),
    ),
    Case(
        "disabled-parks-its-deliveries",
        take=0,
        claim=0,
        routed=False,
        older=(Older(2),),
        then=("SELECT whk.disable_webhook(%(hook)s, 'operator')",),
    ),
    Case(
        # In-flight deliveries outlive a delete; released (or failed) afterwards they end cancelled.
        "deleted-in-flight-then-released",
        take=0,
        claim=0,
        routed=False,
        older=(Older(2, "in_flight", by="d2"),),
        then=("SELECT whk.delete_webhook(%(hook)s)", "SELECT whk.release_deliveries('d2')"),
    ),
    # --- consumer status (whk.set_consumer_status): suspended holds everything pending, like a pause;
    # disabled parks, like disabling every webhook of the consumer; active again releases the parked ones.
    Case(
        "consumer-suspended",
        take=0,
        claim=0,
        then=("SELECT whk.set_consumer_status(%(consumer)s, 'suspended')",),
    ),
    Case(
        "consumer-suspended-with-due-deliveries",
        take=0,
        claim=0,
        older=(Older(2),),
        then=("SELECT whk.set_consumer_status(%(consumer)s, 'suspended')",),
    ),
    Case(
        "consumer-disabled-parks-its-deliveries",
        take=0,
        claim=0,
        routed=False,
        older=(Older(2),),
        then=("SELECT whk.set_consumer_status(%(consumer)s, 'disabled')",),
    ),
    Case(
        "consumer-active-again-after-disabled",
        take=0,
        claim=1,
        claim_older=2,
        differs="take-refuses-the-claim-serves-the-backlog-first",
        older=(Older(2),),
        then=(
            "SELECT whk.set_consumer_status(%(consumer)s, 'disabled')",
            "SELECT whk.set_consumer_status(%(consumer)s, 'active')",
        ),
    ),
    Case(
        "consumer-suspended-after-disabled-releases-but-holds",
        take=0,
        claim=0,
        older=(Older(2),),
        then=(
            "SELECT whk.set_consumer_status(%(consumer)s, 'disabled')",
            "SELECT whk.set_consumer_status(%(consumer)s, 'suspended')",
        ),
    ),
    # --- the runtime row: created by routing, locked SKIP LOCKED by whoever serves the webhook
    Case(
        "first-event-of-a-new-webhook",
        take=0,
        claim=1,
        differs="take-needs-the-runtime-row-this-routing-creates",
        runtime=None,
    ),
    Case("runtime-row-locked-elsewhere", take=0, claim=0, lock="webhook_runtime"),
    Case(
        "consumer-runtime-locked-elsewhere",
        take=0,
        claim=0,
        consumer={"quota_deliveries_per_day": 100},
        consumer_runtime={},
        lock="consumer_runtime",
    ),
]


@dataclass(frozen=True)
class World:
    consumer: int
    hook: int
    older: list[int]  # every older delivery
    finished: list[int]


def _at(value: Any) -> Any:
    """timedelta: that far from now (a date column gets the date); anything else as is."""
    return datetime.now(UTC) + value if isinstance(value, timedelta) else value


def _set(conn: psycopg.Connection[Any], table: str, key: str, key_id: int, cols: Mapping[str, Any]) -> None:
    if cols:
        assignments = ", ".join(f"{c} = %s" for c in cols)
        values = [_at(v) for v in cols.values()]
        if "quota_day" in cols:
            values = [v.date() if c == "quota_day" else v for c, v in zip(cols, values, strict=True)]
        conn.execute(f"UPDATE whk.{table} SET {assignments} WHERE {key} = %s", [*values, key_id])


def build(conn: psycopg.Connection[Any], case: Case) -> World:
    """Everything of ``case`` except the fresh events."""
    if case.default_bucket is not None:
        conn.execute(
            "UPDATE whk.whk_05_configuracoes SET value = %s WHERE key = 'rate_limit.webhook_default'",
            [json.dumps(case.default_bucket)],
        )
    consumer = make_consumer(conn, **case.consumer)
    hook = make_webhook(conn, consumer, URL, ["adm.*"], **case.hook)
    if case.runtime is not None:
        conn.execute("INSERT INTO whk.webhook_runtime (webhook_id) VALUES (%s)", [hook])
    older: list[int] = []
    finished: list[int] = []
    for group in case.older:
        assert case.runtime is not None, "older deliveries were routed: the webhook has its runtime row"
        events = emit(conn, "adm.old", key=group.key, count=group.n)
        route(conn)
        ids = [
            int(r[0])
            for r in conn.execute(
                "SELECT id FROM whk.whk_03_entregas WHERE event_id = ANY(%s::uuid[]) ORDER BY id", [events]
            ).fetchall()
        ]
        older += ids
        if group.status == "pending":
            conn.execute(
                "UPDATE whk.delivery_queue SET next_attempt_at = %s WHERE id = ANY(%s)",
                [_at(EARLIER if group.due else LATER), ids],
            )
        elif group.status == "in_flight":
            conn.execute(
                "UPDATE whk.delivery_queue SET status = 'in_flight', claimed_by = %s, lease_until = %s,"
                " batch_id = CASE WHEN %s THEN %s::uuid END WHERE id = ANY(%s)",
                [group.by, _at(LATER), group.batch, "00000000-0000-0000-0000-00000000000b", ids],
            )
            if group.finished:
                finished += ids
        else:
            assert group.status == "awaiting_ack"
            conn.execute(
                "UPDATE whk.delivery_queue SET status = 'awaiting_ack', ack_deadline = %s, attempts = 1"
                " WHERE id = ANY(%s)",
                [_at(LATER), ids],
            )
    for statement in case.then:
        conn.execute(statement, {"hook": hook, "consumer": consumer})
    if case.runtime:
        _set(conn, "webhook_runtime", "webhook_id", hook, case.runtime)
    if case.consumer_runtime is not None:
        conn.execute("INSERT INTO whk.consumer_runtime (consumer_id) VALUES (%s)", [consumer])
        _set(conn, "consumer_runtime", "consumer_id", consumer, case.consumer_runtime)
    return World(consumer, hook, older, finished)


@contextmanager
def held_elsewhere(dsn: str, case: Case, world: World) -> Iterator[None]:
    """The row ``case.lock`` locked by another open transaction (a claim of another dispatcher)."""
    if case.lock is None:
        yield
        return
    key, key_id = (
        ("webhook_id", world.hook) if case.lock == "webhook_runtime" else ("consumer_id", world.consumer)
    )
    with psycopg.connect(dsn) as other:
        other.execute(f"SELECT 1 FROM whk.{case.lock} WHERE {key} = %s FOR UPDATE", [key_id])
        yield
        other.rollback()


@dataclass(frozen=True)
class Answer:
    fresh_out: int
    fresh_pending: int
    older_out: int


def in_flight(conn: psycopg.Connection[Any], ids: list[int]) -> set[int]:
    rows = conn.execute(
        "SELECT id FROM whk.whk_03_entregas"
        " WHERE id = ANY(%s) AND status = 'in_flight' AND claimed_by = 'd1'",
        [ids],
    ).fetchall()
    return {int(r[0]) for r in rows}


def answer(
    conn: psycopg.Connection[Any], world: World, fresh: list[str], before: set[int], returned: set[int]
) -> Answer:
    rows = conn.execute(
        "SELECT id, status FROM whk.whk_03_entregas WHERE webhook_id = %s AND event_id = ANY(%s::uuid[])",
        [world.hook, fresh],
    ).fetchall()
    assert {r[1] for r in rows} <= {"in_flight", "pending"}
    fresh_out = in_flight(conn, [int(r[0]) for r in rows])
    older_out = in_flight(conn, world.older) - before
    # What the function returned is exactly what it put in flight.
    assert returned == fresh_out | older_out
    return Answer(len(fresh_out), len(rows) - len(fresh_out), len(older_out))


def run_route_and_take(conn: psycopg.Connection[Any], case: Case, world: World) -> set[int]:
    with held_elsewhere(conn.info.dsn, case, world):
        rows = conn.execute(
            "SELECT delivery_id FROM whk.route_and_take(1000, 'd1', %s, 30, %s::bigint[])",
            [case.slots, world.finished],
        ).fetchall()
    return {int(r[0]) for r in rows if r[0] is not None}


def run_claim(conn: psycopg.Connection[Any], case: Case, world: World) -> set[int]:
    route(conn)
    with held_elsewhere(conn.info.dsn, case, world):
        rows = conn.execute(
            "SELECT delivery_id FROM whk.claim_deliveries('d1', %s, 30, %s::bigint[])",
            [case.slots, world.finished],
        ).fetchall()
    return {int(r[0]) for r in rows}


RUNNERS = {"route_and_take": run_route_and_take, "claim_deliveries": run_claim}


@pytest.mark.parametrize("function", sorted(RUNNERS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_admission(conn: psycopg.Connection[Any], case: Case, function: str) -> None:
    world = build(conn, case)
    deliver_at = None if case.deliver_at is None else _at(case.deliver_at)
    fresh = emit(conn, "adm.e", key=case.key, deliver_at=deliver_at, count=case.fresh)
    before = in_flight(conn, world.older)
    returned = RUNNERS[function](conn, case, world)
    got = answer(conn, world, fresh, before, returned)
    if function == "route_and_take":
        want = Answer(case.take, case.fresh - case.take if case.routed else 0, 0)
    else:
        want = Answer(case.claim, case.fresh - case.claim if case.routed else 0, case.claim_older)
    assert got == want


def test_the_table_names_every_difference():
    """Where the two functions answer differently the case says why; where they agree it says nothing."""
    assert len({c.id for c in CASES}) == len(CASES)
    for case in CASES:
        assert (case.take != case.claim) == (case.differs is not None), case.id
        if case.differs is not None and case.take < case.claim:
            assert case.differs.startswith(("take-refuses-", "take-needs-")), case.id
