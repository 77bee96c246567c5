"""The dispatcher engine: route, claim fairly, send, classify, record — with one stop event.

Tasks (all watched; any crash stops the engine):

- the main loop runs one ``whk.dispatch_round`` per round trip (routing with ``whk.route_and_take``, which
  may hand fresh deliveries over already in flight, then the fair ``whk.claim_deliveries`` for what is
  still due), then starts one send task per request (a batch is one request) within
  ``WHK_DISPATCHER_CONCURRENCY`` slots; it passes the deliveries whose request succeeded but whose outcome
  is not recorded yet (``p_finished``), so the in-flight caps count only requests on the wire;
- the recorder writes finished requests in groups (``whk.record_outcomes``: one round trip for many),
  lingering up to 25 ms when nothing waits for them and 5 ms when due work is held back;
- the listener keeps a LISTEN on ``whk_outbox`` and reconnects with backoff when the connection dies;
- the heartbeat refreshes this dispatcher's row (``whk.dispatcher_heartbeat``) and runs the maintenance
  sweep (``whk.ensure_webhook_runtime``, ``whk.reclaim_expired_leases``, ``whk.expire_acks``,
  ``whk.auto_disable_webhooks``) under an advisory try-lock.

Going idle follows the wake-up contract: declare idle (``whk.dispatcher_set_idle``), re-check for work,
then sleep until a NOTIFY, a local event (a slot freed, outcomes recorded), the next timed work
(``whk.next_wakeup``) or the poll interval. The idle flag is cleared only when a round saturates (a full
routing batch or every free slot claimed): while the dispatcher keeps up, capture-side NOTIFYs are what
make commit-to-delivery latency milliseconds; once it is saturated it loops without sleeping and the
ERP's commits stop paying for NOTIFY.

Circuit breakers, rate limits, quotas and retry bookkeeping are applied in SQL by the claim and by
``whk.record_outcomes``; the engine only classifies each response (``dispatcher.classify``), picks the
retry delay (``dispatcher.retry``) and says whether the outcome counts as a failure
(``dispatcher.classify.is_failure``).

Shutdown (stop event): stop claiming, let in-flight attempts finish within ``WHK_SHUTDOWN_GRACE``,
cancel the rest, record what finished, release whatever is still claimed (``whk.release_deliveries``),
remove the heartbeat row.

Faults (``dispatcher/faults.py`` has the table): one webhook's bad data never stops the loop. A round that
fails with a data error is followed at once by ``whk.isolate_round_faults``, which bisects the webhooks
with rolled-back probes and quarantines the culprits; the next round serves everyone else. A flush of
outcomes that fails so is written again one webhook at a time, quarantining the webhook whose outcomes
still fail (their deliveries come back by lease expiry and wait for the quarantine to be cleared). An
error no single webhook reproduces switches the failing stage (routing or claiming) off with backoff up to
``_FAULT_BACKOFF_MAX_S`` while the other stage keeps running, and is shown in the heartbeat row
(``last_error``, health: degraded). Lost connections keep their reconnect-with-backoff behaviour. Any
other error is logged with its traceback and retried with backoff; ``FATAL_STREAK`` of them in a row end
the process (exit 1) for a supervisor to restart and report.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from dispatcher.attempt import AttemptResult, OutboundRequest
from dispatcher.classify import Outcome, classify, is_failure
from dispatcher.faults import FATAL_STREAK, describe, is_webhook_fault
from dispatcher.metrics import DispatcherMetrics
from dispatcher.models import AttemptLog, ClaimedDelivery, DeliveryOutcome, Recorded, RequestOutcome
from dispatcher.repository import Repository
from dispatcher.request import (
    PreparedWebhook,
    body_digest,
    build_request,
    loggable_headers,
    message_id,
    prepare_webhook,
    request_body,
)
from dispatcher.retry import RetryPolicy, next_delay
from whk.redact import mask_headers
from whk.secretbox import SecretBox
from whk.settings import Settings
from whk.urlpolicy import policy_fingerprint

log = logging.getLogger("whk.dispatcher")
# One line per delivery outcome (DEBUG; WARNING for dead letters, 410s and SSRF refusals), and the detail of
# each request (INFO) when WHK_DEBUG is on or the webhook's trace flag is set (docs/operations.md).
dlog = logging.getLogger("whk.dispatcher.delivery")
tlog = logging.getLogger("whk.dispatcher.trace")
_DETAIL_BODY_MAX = 4096

# Database errors the loops survive (server restart, network blip, pool exhausted while reconnecting).
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    PoolTimeout,
)

_HOOK_TTL_S = 2.0
_POLICY_TTL_S = 5.0
_RECORD_GROUP = 1000
_RECORD_LINGER_S = 0.005
_RECORD_LINGER_CALM_S = 0.025
_MIN_SLEEP_S = 0.005
_TIMED_REFRESH_S = 0.1
_BACKOFF_MAX_S = 5.0
_FAULT_BACKOFF_S = 0.5
_FAULT_BACKOFF_MAX_S = 30.0


class Engine:
    """One dispatcher process's delivery machinery (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        repo: Repository,
        sender: Any,
        *,
        dispatcher_id: str,
        listen: Callable[[Callable[[], None]], Coroutine[Any, Any, None]] | None = None,
        rng: random.Random | None = None,
        metrics: DispatcherMetrics | None = None,
    ) -> None:
        self._s = settings.dispatcher
        self._repo = repo
        self._sender = sender
        self._id = dispatcher_id
        self._debug = settings.core.debug
        self._listen = listen
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        # WHK_SECRET_KEYS (shared with the API); the public development key only when WHK_ENV=development.
        self._box = SecretBox.from_settings(settings)
        self._wake = asyncio.Event()
        self._outcomes: asyncio.Queue[RequestOutcome] = asyncio.Queue()
        self._flush_now = asyncio.Event()
        self._queued = 0  # deliveries waiting in _outcomes
        # Deliveries whose request succeeded but whose outcome is not recorded yet: no longer on the wire, so
        # the claim's in-flight caps do not count them (whk.claim_deliveries, p_finished). Failed requests
        # are not listed: their webhook gets no further request until the failure is written, so its
        # breaker and failure streak always count it first.
        self._finished: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._more_due = True
        self._idle = False
        self._hooks: dict[int, tuple[float, PreparedWebhook]] = {}
        # 'delivery.response_body_max_bytes', read at the first claim and again every _POLICY_TTL_S:
        # (when read, value); a None value: the sender's default.
        self._body_cap: tuple[float, int | None] | None = None
        self._timed_checked = -1e9
        self._timed_at: float | None = None
        # Fault handling (module docstring): stages switched off until a monotonic time, the backoff of
        # unexplained faults, consecutive unexpected errors, and the error shown in the heartbeat row.
        self._route_off_until = 0.0
        self._claim_off_until = 0.0
        self._fault_backoff = _FAULT_BACKOFF_S
        self._unexpected = 0
        self.last_error: str | None = None
        exempt = tuple(settings.core.allow_private_cidrs)
        self.ssrf_exempt = [str(n) for n in exempt]
        self.ssrf_policy = policy_fingerprint(exempt)
        self.stats = {"routed": 0, "claimed": 0, "requests": 0, "recorded": 0, "quarantined": 0}
        self.metrics = metrics or DispatcherMetrics()
        self.metrics.track_in_flight(lambda: self._in_flight)

    # ------------------------------------------------------------------ public

    def wake(self) -> None:
        """Something may be claimable now (a NOTIFY, a freed slot, recorded outcomes)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        with contextlib.suppress(*TRANSIENT_DB_ERRORS):
            await self._beat(stopping=False)
            await self._repo.system_event("startup")
        recorder_stop = asyncio.Event()
        side = [
            asyncio.create_task(self._recorder(recorder_stop), name="whk-recorder"),
            asyncio.create_task(self._heartbeat(stop), name="whk-heartbeat"),
        ]
        if self._listen is not None:
            side.append(asyncio.create_task(self._listen(self.wake), name="whk-listener"))
        main = asyncio.create_task(self._main_loop(stop), name="whk-main")
        watched = [main, *side]
        try:
            # Any side task ending early is a bug or a fatal error: stop everything.
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not main and not t.cancelled() and t.exception() is not None:
                    stop.set()
                    raise t.exception()  # type: ignore[misc]
            await main
        finally:
            stop.set()
            await self._drain_sends()
            recorder_stop.set()
            for t in side:
                if t.get_name() != "whk-recorder":
                    t.cancel()
            await asyncio.gather(*side, return_exceptions=True)
            await self._final_flush()
            # Bounded: SIGTERM must end within the grace period even with the database gone (the
            # claims then come back by lease expiry instead).
            await self._retry_db(self._repo.release, "release claimed deliveries", attempts=3)
            with contextlib.suppress(*TRANSIENT_DB_ERRORS):
                await self._repo.system_event("shutdown")
                await self._repo.forget()

    # ------------------------------------------------------------------ main loop

    async def _main_loop(self, stop: asyncio.Event) -> None:
        backoff = 0.1
        while not stop.is_set():
            try:
                saturated = await self._round()
                backoff = 0.1
                self._unexpected = 0
                if saturated:
                    # More is waiting right now: loop without sleeping, and let commits stop notifying.
                    if self._idle:
                        await self._repo.set_idle(False)
                        self._idle = False
                    await asyncio.sleep(0)
                    continue
                if not self._idle:
                    await self._repo.set_idle(True)
                    self._idle = True
                    # Re-check after declaring idle: a commit between our last look and the flag would
                    # otherwise not notify and wait for the poll.
                    continue
                # Idle is declared (and stays declared while we keep up), so any commit after this
                # round's snapshot NOTIFYs us: sleep until then, or until timed work is due.
                timeout = await self._timed_work_in(self._s.poll_interval)
            except Exception as exc:
                if is_webhook_fault(exc):
                    # Before the transient check: class 54 (program limit) is an OperationalError too.
                    timeout = await self._isolate(exc)
                elif isinstance(exc, TRANSIENT_DB_ERRORS):
                    log.warning("database unavailable (%s); retrying in %.1fs", _first_line(exc), backoff)
                    timeout = backoff
                    backoff = min(backoff * 2, _BACKOFF_MAX_S)
                else:
                    timeout = self._unexpected_error(exc, "dispatcher round")
                self._idle = False  # re-declare after reconnecting (the row may be gone)
            await self._sleep(stop, timeout)

    async def _isolate(self, exc: BaseException) -> float:
        """A round failed with a data error: quarantine the webhooks that cause it (one round trip,
        ``whk.isolate_round_faults``). Returns how long to wait before the next round: nothing when
        culprits were found (the next round serves everyone else), else the fault backoff, with the
        failing stage switched off meanwhile."""
        log.error("dispatcher round failed (%s); looking for the webhook that causes it", describe(exc))
        try:
            rows = await self._repo.isolate_round_faults(self._s.batch_size, self._s.lease_seconds)
        except Exception as probe_exc:
            if isinstance(probe_exc, TRANSIENT_DB_ERRORS) and not is_webhook_fault(probe_exc):
                log.warning("cannot look for the culprit now (%s)", _first_line(probe_exc))
            else:
                log.exception("looking for the culprit failed")
            rows = []
        culprits = [r for r in rows if r.webhook_id is not None]
        unexplained = [r for r in rows if r.webhook_id is None]
        for r in culprits:
            self.stats["quarantined"] += 1
            self._hooks.pop(r.webhook_id or 0, None)
            log.error(
                "webhook %d quarantined: its data breaks the %s stage (SQLSTATE %s: %s); every other "
                "webhook is served. Fix the row, then POST /api/whk/webhooks/%d/clear-quarantine",
                r.webhook_id,
                r.stage,
                r.sqlstate,
                r.message,
                r.webhook_id,
                extra={"webhook_id": r.webhook_id, "dispatcher_id": self._id},
            )
        if culprits and not unexplained:
            return 0.0
        wait = self._fault_backoff
        self._fault_backoff = min(self._fault_backoff * 2, _FAULT_BACKOFF_MAX_S)
        until = time.monotonic() + wait
        for r in unexplained:
            if r.stage == "route":
                self._route_off_until = until
            else:
                self._claim_off_until = until
            log.error(
                "the %s stage fails without a single webhook to blame (SQLSTATE %s: %s): it is off for "
                "%.1fs while the rest keeps running",
                r.stage,
                r.sqlstate,
                r.message,
                wait,
            )
        if unexplained:
            self.last_error = "; ".join(f"{r.stage}: {r.sqlstate} {r.message}" for r in unexplained)
        elif not culprits:
            self.last_error = f"round: {describe(exc)}"
            log.error("the error did not reproduce in isolation; retrying in %.1fs", wait)
        return wait

    def _unexpected_error(self, exc: BaseException, where: str) -> float:
        """Log an error that is neither transient nor a webhook's data, with context; back off. After
        ``FATAL_STREAK`` in a row it is raised: the process exits for its supervisor to restart."""
        self._unexpected += 1
        self.last_error = f"{where}: {describe(exc)}"
        wait: float = min(_FAULT_BACKOFF_S * 2.0 ** (self._unexpected - 1), _FAULT_BACKOFF_MAX_S)
        if self._unexpected >= FATAL_STREAK:
            log.critical("%s failed %d times in a row; stopping", where, self._unexpected, exc_info=exc)
            raise exc
        log.error(
            "%s failed unexpectedly (%d in a row); retrying in %.1fs",
            where,
            self._unexpected,
            wait,
            exc_info=exc,
        )
        return wait

    async def _timed_work_in(self, longest: float) -> float:
        """Seconds until time-based work is due (retries, delays, windows, probes, refills), at most
        ``longest``. Asked at most every ``_TIMED_REFRESH_S``; a due-but-blocked item (caps, a lane
        head in flight) is re-checked after ``10 * _MIN_SLEEP_S``."""
        now = time.monotonic()
        if now - self._timed_checked >= _TIMED_REFRESH_S:
            hint = await self._repo.seconds_to_next_wakeup()
            self._timed_at = None if hint is None else now + hint
            self._timed_checked = now
        if self._timed_at is None:
            return longest
        return min(longest, max(self._timed_at - now, _MIN_SLEEP_S * 10))

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        if self._wake.is_set():
            self._wake.clear()
            return
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            self._wake.clear()

    async def _round(self) -> bool:
        """Route then claim once. True when saturated: a full routing batch or every free slot claimed.

        A stage switched off after an unexplained fault (``_isolate``) runs with a limit of 0 until its
        backoff ends; a full round that succeeds again clears the fault state."""
        now = time.monotonic()
        route_on = now >= self._route_off_until
        claim_on = now >= self._claim_off_until
        free = self._s.concurrency - self._in_flight
        claim_limit = max(0, min(free, self._s.batch_size)) if claim_on else 0
        route_limit = self._s.batch_size if route_on else 0
        started = time.perf_counter()
        routed, self._more_due, claimed = await self._repo.dispatch_round(
            route_limit, claim_limit, self._s.lease_seconds, sorted(self._finished)
        )
        elapsed = time.perf_counter() - started
        self.metrics.round(elapsed, routed, len(claimed))
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "round: %d routed, %d claimed in %.2f ms",
                routed,
                len(claimed),
                elapsed * 1000.0,
                extra={
                    "dispatcher_id": self._id,
                    "sql": "whk.dispatch_round",
                    "sql_ms": round(elapsed * 1000.0, 3),
                    "routed": routed,
                    "claimed": len(claimed),
                    "route_limit": route_limit,
                    "claim_limit": claim_limit,
                    "more_due": self._more_due,
                },
            )
        if route_on and claim_on and (self.last_error is not None or self._fault_backoff != _FAULT_BACKOFF_S):
            if self.last_error is not None:
                log.info("dispatcher rounds succeed again")
            self.last_error = None
            self._fault_backoff = _FAULT_BACKOFF_S
        self.stats["routed"] += routed
        if self._more_due and not claimed:
            # Due work exists but none could be claimed (caps, limits, or another transaction holding the
            # webhook's runtime row for a moment): ask when to look again instead of trusting a cached hint.
            self._timed_checked = -1e9
        if claimed:
            self.stats["claimed"] += len(claimed)
            await self._start(claimed)
        requests = len({(d.webhook_id, d.batch_id) if d.batch_id else d.delivery_id for d in claimed})
        return (route_on and routed >= self._s.batch_size) or (
            claim_on and free > 0 and requests >= min(free, self._s.batch_size)
        )

    async def _start(self, claimed: Sequence[ClaimedDelivery]) -> None:
        hooks = await self._prepared({d.webhook_id for d in claimed})
        groups: dict[Any, list[ClaimedDelivery]] = {}
        for d in claimed:
            key = ("b", d.batch_id) if d.batch_id is not None else ("d", d.delivery_id)
            groups.setdefault(key, []).append(d)
        for group in groups.values():
            group.sort(key=lambda d: (d.commit_seq or 0, d.delivery_id))
            self._in_flight += 1
            task = asyncio.create_task(self._deliver(hooks[group[0].webhook_id], group))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._in_flight -= 1
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task failed", exc_info=task.exception())
        # Claim again once a quarter of the slots are free (or all are): a round per freed slot would
        # spend a route+claim round trip on every single request under load. Only when due work was left
        # behind: otherwise a freed slot cannot make anything claimable (new events come with a NOTIFY).
        if self._more_due and self._in_flight <= self._s.concurrency * 3 // 4:
            self._wake.set()

    async def _prepared(self, ids: set[int]) -> dict[int, PreparedWebhook]:
        now = time.monotonic()
        if self._body_cap is None or now - self._body_cap[0] > _POLICY_TTL_S:
            self._body_cap = (now, await self._repo.response_body_max_bytes())
        stale = [i for i in ids if i not in self._hooks or now - self._hooks[i][0] > _HOOK_TTL_S]
        if stale:
            for row in await self._repo.webhooks(stale):
                try:
                    hook = prepare_webhook(row, self._box)
                except Exception as exc:
                    # A bug meeting one webhook's row must not stop the others: its attempts fail with
                    # this as their configuration error (attempt log), like a broken secret does.
                    log.exception(
                        "cannot prepare webhook %d",
                        row.id,
                        extra={"webhook_id": row.id, "dispatcher_id": self._id},
                    )
                    policy = RetryPolicy()  # no schedule: unless the row's own still reads
                    with contextlib.suppress(Exception):
                        policy = RetryPolicy.from_json(row.retry_policy)
                    hook = PreparedWebhook(
                        row, (), (), frozenset(), policy, config_error=f"cannot prepare: {describe(exc)}"
                    )
                self._hooks[row.id] = (now, hook)
        return {i: self._hooks[i][1] for i in ids}

    # ------------------------------------------------------------------ one request

    async def _deliver(self, hook: PreparedWebhook, group: list[ClaimedDelivery]) -> None:
        msg_id = message_id(group)
        body = request_body(group)
        started = datetime.now(UTC)
        deadline = min(hook.row.timeout_ms / 1000.0, self._s.attempt_timeout)
        req: OutboundRequest | None = None
        if hook.config_error is not None:
            # Nothing is built or sent (never unsigned): the attempt fails with the configuration problem
            # and follows the schedule.
            result = AttemptResult(
                status=None,
                headers=[],
                body=b"",
                body_truncated=False,
                duration_ms=0.0,
                error_class=None,
                error_detail=hook.config_error,
                location=None,
                remote_ip=None,
            )
            outcome = Outcome(kind="retry", reason=f"webhook configuration: {hook.config_error}")
        else:
            req = build_request(
                hook,
                msg_id=msg_id,
                body=body,
                timestamp=int(time.time()),
                deadline_s=deadline,
                user_agent=self._s.user_agent,
                max_body_bytes=None if self._body_cap is None else self._body_cap[1],
            )
            result = await self._sender.send(req)
            outcome = classify(result, require_ack=hook.row.require_ack, now=time.time())
        self.stats["requests"] += 1
        kind = outcome.kind
        self.metrics.attempt(hook.row.id, kind, result.duration_ms)
        if kind == "delivered":
            self.metrics.delivered([d.payload for d in group], time.time())
        attempt = _attempt_log(hook, group[0], started, req, result, outcome, body)
        deliveries = tuple([self._delivery_outcome(hook, d, outcome) for d in group])
        self._log_outcome(hook, group, deliveries, req, result, outcome, body, started)
        # The next event of an ordered lane waits for this outcome to be recorded: no lingering for it.
        self.queue_outcome(RequestOutcome(attempt, deliveries), urgent=hook.row.delivery_mode == "ordered")

    def _log_outcome(
        self,
        hook: PreparedWebhook,
        group: Sequence[ClaimedDelivery],
        deliveries: Sequence[DeliveryOutcome],
        req: OutboundRequest | None,
        result: AttemptResult,
        outcome: Outcome,
        body: bytes,
        now: datetime,
    ) -> None:
        """The log lines of one finished request. At INFO without WHK_DEBUG or a trace this costs a level
        check unless a delivery died or the webhook answered 410 or was refused by the SSRF policy."""
        until = hook.row.trace_until
        verbose = self._debug or (until is not None and until > now)
        if not verbose and outcome.kind == "delivered" and not dlog.isEnabledFor(logging.DEBUG):
            return  # the usual case: nothing below logs (a delivered request has no dead letter)
        if verbose:
            self._log_detail(hook, group, deliveries, req, result, outcome, body, trace=not self._debug)
        if verbose or dlog.isEnabledFor(logging.DEBUG):
            level = logging.INFO if verbose else logging.DEBUG
            for d, done in zip(group, deliveries, strict=True):
                dlog.log(
                    level,
                    "delivery %s: %s (%s)",
                    done.state,
                    outcome.kind,
                    outcome.reason,
                    extra=self._fields(hook, d, done, outcome, result),
                )
        if outcome.kind in ("gone", "blocked"):
            dlog.warning(
                "webhook %d %s: %s",
                hook.row.id,
                "answered 410 Gone and is disabled"
                if outcome.kind == "gone"
                else "refused by the SSRF policy",
                outcome.reason,
                extra=self._fields(hook, group[0], deliveries[0], outcome, result),
            )
        for d, done in zip(group, deliveries, strict=True):
            if done.state == "dead":
                dlog.warning(
                    "delivery dead-lettered: %s",
                    done.dead_reason,
                    extra=self._fields(hook, d, done, outcome, result),
                )

    def _fields(
        self,
        hook: PreparedWebhook,
        d: ClaimedDelivery,
        done: DeliveryOutcome,
        outcome: Outcome,
        result: AttemptResult,
    ) -> dict[str, Any]:
        return {
            "event_id": str(d.event_id),
            "webhook_id": hook.row.id,
            "delivery_id": d.delivery_id,
            "attempt": done.attempt_no,
            "dispatcher_id": self._id,
            "event_type": d.event_type,
            "outcome": outcome.kind,
            "state": done.state,
            "status": result.status,
            "duration_ms": round(result.duration_ms, 3),
        }

    def _log_detail(
        self,
        hook: PreparedWebhook,
        group: Sequence[ClaimedDelivery],
        deliveries: Sequence[DeliveryOutcome],
        req: OutboundRequest | None,
        result: AttemptResult,
        outcome: Outcome,
        body: bytes,
        *,
        trace: bool,
    ) -> None:
        """WHK_DEBUG or a traced webhook: the request and response (credential headers masked with
        whk.redact's rule, bodies cut at 4 KB) and the classifier's decision with its reason."""
        first, done = group[0], deliveries[0]
        fields = self._fields(hook, first, done, outcome, result)
        fields.update(
            {
                "trace": "webhook" if trace else "debug",
                "delivery_ids": [d.delivery_id for d in group] if len(group) > 1 else None,
                "request_method": hook.row.http_method if req is None else req.method,
                "request_url": hook.row.url if req is None else req.url,
                "request_headers": {} if req is None else loggable_headers(hook, req.headers),
                "request_body": _cut(body),
                "response_headers": mask_headers(result.headers, credential_names=hook.masked_names)
                if result.status is not None
                else None,
                "response_body": _cut(result.body) if result.status is not None else None,
                "error_class": result.error_class,
                "error_detail": result.error_detail,
                "decision": outcome.kind,
                "reason": outcome.reason,
                "retry_after_s": outcome.retry_after_s,
                "next_state": done.state,
                "next_attempt_at": done.next_attempt_at.isoformat() if done.next_attempt_at else None,
            }
        )
        tlog.info(
            "%s %s -> %s in %.1f ms; classified %s: %s",
            fields["request_method"],
            fields["request_url"],
            result.status if result.status is not None else result.error_class or "no request",
            result.duration_ms,
            outcome.kind,
            outcome.reason,
            extra=fields,
        )

    def queue_outcome(self, outcome: RequestOutcome, *, urgent: bool) -> None:
        """Hand a finished request to the recorder; ``urgent`` (or a full group) ends its linger now."""
        self._outcomes.put_nowait(outcome)
        self._queued += len(outcome.deliveries)
        if outcome.attempt.success:
            self._finished.update(d.id for d in outcome.deliveries)
        if urgent or self._queued >= _RECORD_GROUP:
            self._flush_now.set()

    def _delivery_outcome(
        self, hook: PreparedWebhook, d: ClaimedDelivery, outcome: Outcome
    ) -> DeliveryOutcome:
        attempt_no = d.attempts + 1
        kind = outcome.kind
        if kind == "delivered":
            return DeliveryOutcome(id=d.delivery_id, attempt_no=attempt_no, state="delivered")
        if kind == "awaiting_ack":
            deadline = datetime.now(UTC) + timedelta(seconds=hook.row.ack_timeout_seconds)
            return DeliveryOutcome(
                id=d.delivery_id, attempt_no=attempt_no, state="awaiting_ack", ack_deadline=deadline
            )
        if kind == "gone":
            return DeliveryOutcome(id=d.delivery_id, attempt_no=attempt_no, state="parked")
        if kind == "blocked" and hook.retry_policy.retry_blocked:
            # The SSRF policy refused the address: no schedule step is spent as if the endpoint were down.
            # Recording it quarantines the webhook (whk.record_outcomes), so the delivery waits, pending,
            # until an operator fixes the URL or the policy and clears the quarantine.
            return DeliveryOutcome(
                id=d.delivery_id, attempt_no=attempt_no, state="pending", next_attempt_at=datetime.now(UTC)
            )
        delay = next_delay(hook.retry_policy, attempt_no - d.schedule_offset, outcome, self._rng)
        if delay is None:
            reason = f"{outcome.reason} (after {attempt_no - d.schedule_offset} attempts)"
            return DeliveryOutcome(id=d.delivery_id, attempt_no=attempt_no, state="dead", dead_reason=reason)
        next_at = datetime.now(UTC) + timedelta(seconds=delay)
        return DeliveryOutcome(
            id=d.delivery_id, attempt_no=attempt_no, state="pending", next_attempt_at=next_at
        )

    # ------------------------------------------------------------------ recorder

    async def _recorder(self, stop: asyncio.Event) -> None:
        while not (stop.is_set() and self._outcomes.empty()):
            getter = asyncio.ensure_future(self._outcomes.get())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait([getter, stopper], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not getter.done():
                getter.cancel()
                continue
            if not self._flush_now.is_set() and not stop.is_set():
                # Linger: one flush of many outcomes costs the database far less than many small ones
                # (~1 ms fixed + ~0.1 ms per delivery). Requests are not held by this (slots free when the
                # request ends), but recorded outcomes are what frees in-flight caps and ordered lanes:
                # linger briefly when due work waits for them (more_due), longer when nothing does; an
                # ordered outcome or a full group flushes at once.
                linger = _RECORD_LINGER_S if self._more_due else _RECORD_LINGER_CALM_S
                waiters = [asyncio.ensure_future(self._flush_now.wait()), asyncio.ensure_future(stop.wait())]
                await asyncio.wait(waiters, timeout=linger, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
            self._flush_now.clear()
            items = self._take_queued(getter.result())
            await self._record(items)
            if self._more_due or any(d.state == "pending" for r in items for d in r.deliveries):
                # Work is waiting (caps, lanes, token buckets) or a retry was scheduled: ask for the next due
                # time again before sleeping, and look now — recorded outcomes free in-flight caps and lanes.
                self._timed_checked = -1e9
                self._wake.set()

    def _take_queued(self, first: RequestOutcome | None = None) -> list[RequestOutcome]:
        """``first`` and what else is queued, up to a group of ``_RECORD_GROUP`` deliveries."""
        items = [] if first is None else [first]
        size = sum(len(r.deliveries) for r in items)
        while size < _RECORD_GROUP and not self._outcomes.empty():
            items.append(self._outcomes.get_nowait())
            size += len(items[-1].deliveries)
        self._queued -= size
        return items

    async def _final_flush(self) -> None:
        while not self._outcomes.empty():
            await self._record(self._take_queued(), attempts=5)

    async def _record(self, items: list[RequestOutcome], *, attempts: int = 30) -> None:
        """Write ``items`` (retrying through database blips). Either way their deliveries stop counting as
        finished-but-unrecorded: written, they are no longer in flight; given up on, their lease expires
        and another round reclaims them. A data error is isolated per webhook (``_record_apart``); any
        other error is logged and the group given up on (their leases bring the deliveries back)."""
        try:
            started = time.perf_counter()
            with self.metrics.recording(sum(len(r.deliveries) for r in items)):
                done = await self._retry_db(
                    functools.partial(self._repo.record, items), "record outcomes", attempts=attempts
                )
            if log.isEnabledFor(logging.DEBUG):
                elapsed_ms = (time.perf_counter() - started) * 1000.0
                log.debug(
                    "recorded %d requests in %.2f ms",
                    len(items),
                    elapsed_ms,
                    extra={
                        "dispatcher_id": self._id,
                        "sql": "whk.record_outcomes",
                        "sql_ms": round(elapsed_ms, 3),
                        "requests": len(items),
                        "deliveries": sum(len(r.deliveries) for r in items),
                    },
                )
            self._count_transitions(done)
            self._unexpected = 0
        except Exception as exc:
            if is_webhook_fault(exc):
                await self._record_apart(items, exc, attempts=attempts)
            else:
                self._unexpected_error(exc, f"recording {len(items)} outcomes")
        finally:
            self._finished.difference_update(d.id for r in items for d in r.deliveries)
        self.stats["recorded"] += sum(len(r.deliveries) for r in items)

    def _count_transitions(self, done: Recorded | None) -> None:
        """Breaker transitions the write reported (none when it was given up on)."""
        if done is not None:
            for t in done.transitions:
                self.metrics.breaker_transition(t.webhook_id, t.from_state, t.to_state)

    async def _record_apart(self, items: list[RequestOutcome], exc: BaseException, *, attempts: int) -> None:
        """A flush failed with a data error: write each webhook's outcomes on its own and quarantine the
        webhooks whose outcomes still fail (unless every one of two or more fails: then it is not theirs).
        Outcomes that cannot be written are dropped: their deliveries come back by lease expiry."""
        log.error("recording outcomes failed (%s); writing them one webhook at a time", describe(exc))
        by_hook: dict[int, list[RequestOutcome]] = {}
        for r in items:
            by_hook.setdefault(r.attempt.webhook_id, []).append(r)
        failed: dict[int, BaseException] = {}
        for hook_id, group in by_hook.items():
            try:
                done = await self._retry_db(
                    functools.partial(self._repo.record, group), "record outcomes", attempts=attempts
                )
                self._count_transitions(done)
            except Exception as one:
                if not is_webhook_fault(one):
                    self._unexpected_error(one, f"recording the outcomes of webhook {hook_id}")
                    continue
                failed[hook_id] = one
        if len(failed) >= 2 and len(failed) == len(by_hook):
            self.last_error = f"record: {describe(exc)}"
            log.error("every webhook's outcomes fail to record (%s): not one webhook's fault", describe(exc))
            return
        for hook_id, error in failed.items():
            reason = _first_line(error)
            state = error.sqlstate if isinstance(error, psycopg.Error) else None
            quarantined = await self._retry_db(
                functools.partial(self._repo.quarantine, hook_id, "record", reason, state),
                "quarantine a webhook",
                attempts=attempts,
            )
            self.stats["quarantined"] += 1
            self._hooks.pop(hook_id, None)
            log.error(
                "webhook %d %s: its outcomes cannot be recorded (SQLSTATE %s: %s); its deliveries come "
                "back when their lease expires and wait for POST /api/whk/webhooks/%d/clear-quarantine",
                hook_id,
                "quarantined" if quarantined else "is quarantined",
                state,
                reason,
                hook_id,
                extra={"webhook_id": hook_id, "dispatcher_id": self._id},
            )

    async def _retry_db(self, fn: Callable[[], Awaitable[Any]], what: str, *, attempts: int = 30) -> Any:
        """Run ``fn`` until the database accepts it (bounded): outcomes must not be dropped on a blip."""
        backoff = 0.1
        for i in range(attempts):
            try:
                return await fn()
            except TRANSIENT_DB_ERRORS as exc:
                if is_webhook_fault(exc):
                    raise  # a program limit (54) caused by data: retrying the same statement cannot help
                if i == attempts - 1:
                    log.error("giving up to %s: %s", what, _first_line(exc))
                    return None
                log.warning("cannot %s (%s); retrying in %.1fs", what, _first_line(exc), backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
        return None

    # ------------------------------------------------------------------ heartbeat, shutdown

    def _forget_after(self) -> float:
        return max(self._s.lease_seconds, 10 * self._s.heartbeat_interval)

    async def _beat(self, *, stopping: bool) -> None:
        await self._repo.heartbeat(
            stopping=stopping,
            forget_after_s=self._forget_after(),
            ssrf_policy=self.ssrf_policy,
            ssrf_exempt=self.ssrf_exempt,
            last_error=self.last_error,
        )

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._beat(stopping=False)
                swept = await self._repo.sweep()
                if swept and any(swept.values()):
                    log.info("maintenance: %s", swept)
                    self._wake.set()
            except TRANSIENT_DB_ERRORS as exc:
                log.warning("heartbeat failed: %s", _first_line(exc))
            except Exception:
                # The maintenance sweep or the heartbeat itself hit something unexpected: keep beating
                # (health shows a missing heartbeat; the delivery loop goes on) and say so every time.
                log.exception("heartbeat or maintenance failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._s.heartbeat_interval)
        with contextlib.suppress(*TRANSIENT_DB_ERRORS):
            await self._beat(stopping=True)

    async def _drain_sends(self) -> None:
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self._s.shutdown_grace)
            for t in pending:
                t.cancel()
            if pending:
                log.warning("cancelled %d attempts still running after the grace period", len(pending))
                await asyncio.gather(*pending, return_exceptions=True)


def _attempt_log(
    hook: PreparedWebhook,
    first: ClaimedDelivery,
    started: datetime,
    req: OutboundRequest | None,
    result: AttemptResult,
    outcome: Outcome,
    body: bytes,
) -> AttemptLog:
    """The attempt record of one request (``first``: its first delivery, which names a batch's id)."""
    verdict = is_failure(outcome)
    answered = result.status is not None
    return AttemptLog(
        webhook_id=hook.row.id,
        success=verdict is False,
        failure=verdict is True,
        gone=outcome.kind == "gone",
        outcome=outcome.kind,
        request_method=hook.row.http_method if req is None else req.method,
        request_url=hook.row.url if req is None else req.url,
        started_at=started,
        request_headers={} if req is None else loggable_headers(hook, req.headers),
        batch_id=first.batch_id,
        duration_ms=result.duration_ms,
        request_body_sha256=body_digest(body),
        request_body_size=len(body),
        response_status=result.status,
        response_headers=dict(result.headers) if answered else None,
        response_body=_text(result.body) if answered else None,
        response_truncated=result.body_truncated,
        error_class=result.error_class,
        error_detail=_join(result.error_detail, outcome.reason, result.location),
    )


def _cut(body: bytes) -> str:
    text = _text(body[:_DETAIL_BODY_MAX])
    return text + f"… ({len(body)} bytes)" if len(body) > _DETAIL_BODY_MAX else text


def _text(body: bytes) -> str:
    # PostgreSQL text cannot hold NUL; undecodable bytes are replaced (the hash of the request is exact).
    return body.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def _join(detail: str | None, reason: str, location: str | None) -> str | None:
    parts = [p for p in (detail, reason if detail is None else None) if p]
    if location:
        parts.append(f"Location: {location}")
    return "; ".join(parts) or None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
