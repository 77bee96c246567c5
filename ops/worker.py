"""Composition root of the operations worker (``whk worker``; ``whk dispatcher`` starts one beside the
engine): pgqueuer over one asyncpg connection, the schedules and the one-off entrypoints.

Scheduled (pgqueuer ``schedule()``: its row in ``whk.pgqueuer_schedules`` is the lock, so each runs at most
once per period across every worker):

* ``evaluate_alerts`` every WHK_ALERT_EVAL_EVERY_S seconds: roll-up, then alert evaluation;
* ``housekeeping`` hourly: create the coming outbox and attempt-log partitions, forget job run records
  older than a day and channels nothing refers to any more;
* ``retention`` hourly (at half past): drop the outbox and attempt-log partitions past
  ``retention.outbox_days`` / ``retention.attempts_days`` that no unfinished or dead delivery needs, then
  delete expired delivery history and audit rows in batches of 10,000 (``whk.retention``; the settings
  live in whk_05_configuracoes).

One-off: ``replay``, one job per replay (``whk.replay_start`` queues it): batches of REPLAY_BATCH events
through ``whk.replay_step``, each its own transaction, until done or cancelled; a failure marks the replay
failed. ``bulk_retry``, one job per bulk retry (``whk.bulk_retry_start`` queues it): batches of
BULK_RETRY_BATCH deliveries by keyset on the id through ``whk.bulk_retry_step``, each its own transaction,
until done or cancelled; a failure marks it failed. ``provision_secret``, queued by the database at the
commit that leaves a webhook without a current signing secret (a webhook created in SQL, its secret
deleted or expired by hand): the worker makes and seals one exactly as the API does
(``whk.webhook_secrets``); the same sweep runs at start-up and hourly, for jobs that failed. ``notify``,
one job per notice and channel, retried with exponential backoff (WHK_NOTIFY_RETRY_DELAY_S doubling, at
most 5 minutes) up to WHK_NOTIFY_MAX_ATTEMPTS attempts, then recorded as failed in the alert's history and
held (status ``failed``) for ``whk jobs``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import uvloop
from pgqueuer import PgQueuer
from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver
from pgqueuer.adapters.persistence import qb
from pgqueuer.adapters.persistence.queries import Queries
from pgqueuer.domain.errors import RetryRequested
from pgqueuer.domain.models import Job, Schedule
from pgqueuer.domain.settings import DBSettings
from psycopg_pool import AsyncConnectionPool

from ops.alerting.evaluate import Evaluator
from ops.metrics import OpsMetrics, serve
from ops.notify.send import Channel, NotifyFailed, Sender
from ops.repository import OpsRepository
from whk import db, dbroles, retention
from whk.alertchannels import open_channel
from whk.notice import decode_notice
from whk.secretbox import SecretBox, SecretDecryptError
from whk.settings import Settings
from whk.webhook_secrets import PROVISION_ENTRYPOINT, aprovision_pending, aprovision_secret

__all__ = ["main", "run_worker", "worker_id"]

log = logging.getLogger("whk.ops")

HOUSEKEEPING_CRON = "0 * * * *"
RETENTION_CRON = "30 * * * *"
REPLAY_BATCH = 1000
BULK_RETRY_BATCH = 1000


def worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Jobs:
    """The job bodies, holding what they share (pool, sender, secrets)."""

    def __init__(
        self,
        settings: Settings,
        pool: AsyncConnectionPool[Any],
        sender: Sender,
        ident: str,
        metrics: OpsMetrics | None = None,
    ) -> None:
        self._s = settings
        self._metrics = metrics or OpsMetrics()
        self._pool = pool
        self._sender = sender
        self._ident = ident
        self._box = SecretBox.from_settings(settings)
        self._repo = OpsRepository()
        self._eval = Evaluator(
            lease_s=settings.dispatcher.lease_seconds, rollup_horizon_s=settings.ops.rollup_horizon_s
        )

    async def evaluate_alerts(self, schedule: Schedule) -> None:
        async with self._pool.connection() as conn:
            run = await self._repo.start_run(
                conn, "evaluate_alerts", self._s.ops.alert_eval_every_s, self._ident
            )
            try:
                report = await self._eval.evaluate(conn)
            except Exception as exc:
                self._metrics.evaluation(ok=False)
                log.warning(
                    "alert evaluation failed: %s",
                    exc,
                    extra={"job": "evaluate_alerts", "worker_id": self._ident},
                )
                await self._repo.finish_run(conn, run, False, {"error": str(exc)[:500]})
                raise
            self._metrics.evaluation(ok=True, changed=report.changed)
            await self._repo.finish_run(
                conn,
                run,
                True,
                {
                    "rules": report.rules,
                    "changed": report.changed,
                    "enqueued": report.enqueued,
                    # The schedule's next tick as this pick set it: one pick per tick across workers.
                    "next_run": schedule.next_run.isoformat(),
                },
            )

    async def seal_legacy_channels(self) -> None:
        async with self._pool.connection() as conn:
            converted = await self._repo.seal_legacy_channels(conn, self._box)
        if converted:
            log.info("moved the inline channels of %d alert rules into encrypted channel rows", converted)

    async def housekeeping(self, _schedule: Schedule) -> None:
        async with self._pool.connection() as conn:
            run = await self._repo.start_run(conn, "housekeeping", 3600, self._ident)
            await self._repo.create_partitions(conn)
            await self._repo.forget_runs(conn)
            channels = await self._repo.forget_channels(conn)
            secrets = len(await aprovision_pending(conn, self._box))
            await self._repo.finish_run(
                conn, run, True, {"channels_forgotten": channels, "secrets_provisioned": secrets}
            )

    async def provision_secret(self, job: Job) -> None:
        """Give a webhook that waits for one a signing secret (nothing when it has one again)."""
        if job.payload is None:
            return
        webhook_id = int(job.payload.decode("ascii"))
        async with self._pool.connection() as conn:
            made = await aprovision_secret(conn, self._box, webhook_id)
        if made is not None:
            log.info(
                "webhook %d: signing secret %s provisioned",
                webhook_id,
                made.key_id,
                extra={**self._job_fields(job), "webhook_id": webhook_id},
            )

    async def provision_pending(self) -> None:
        async with self._pool.connection() as conn:
            done = await aprovision_pending(conn, self._box)
        if done:
            log.info("provisioned the signing secrets of %d webhooks", len(done))

    async def retention(self, _schedule: Schedule) -> None:
        async with self._pool.connection() as conn:
            run = await self._repo.start_run(conn, "retention", 3600, self._ident)
            try:
                report = await retention.arun(conn)
            except Exception as exc:
                log.warning("retention failed: %s", exc, extra={"job": "retention", "worker_id": self._ident})
                await self._repo.finish_run(conn, run, False, {"error": str(exc)[:500]})
                raise
            await self._repo.finish_run(
                conn,
                run,
                True,
                {
                    "dropped": report.dropped,
                    "kept": report.kept,
                    "freed_bytes": report.freed_bytes,
                    "deleted": report.deleted,
                },
            )

    async def replay(self, job: Job) -> None:
        if job.payload is None:
            return
        replay_id = int(job.payload.decode())
        async with self._pool.connection() as conn:
            try:
                while await self._repo.replay_step(conn, replay_id, REPLAY_BATCH):
                    pass
            except Exception as exc:
                log.warning(
                    "replay %d failed: %s",
                    replay_id,
                    exc,
                    extra={**self._job_fields(job), "replay_id": replay_id},
                )
                await self._repo.replay_failed(conn, replay_id, str(exc)[:500])
                raise

    async def bulk_retry(self, job: Job) -> None:
        if job.payload is None:
            return
        bulk_id = int(job.payload.decode())
        async with self._pool.connection() as conn:
            try:
                while await self._repo.bulk_retry_step(conn, bulk_id, BULK_RETRY_BATCH):
                    pass
            except Exception as exc:
                log.warning(
                    "bulk retry %d failed: %s",
                    bulk_id,
                    exc,
                    extra={**self._job_fields(job), "bulk_id": bulk_id},
                )
                await self._repo.bulk_retry_failed(conn, bulk_id, str(exc)[:500])
                raise

    async def notify(self, job: Job) -> None:
        if job.payload is None:
            return
        notice = decode_notice(job.payload)
        attempt = job.attempts + 1
        async with self._pool.connection() as conn:
            row = await self._repo.channel(conn, notice.channel_id)
        entry: dict[str, Any] = {
            "channel_id": notice.channel_id,
            "kind": notice.kind,
            "step": notice.step,
            "attempts": attempt,
        }
        try:
            if row is None:
                raise NotifyFailed("the channel no longer exists", permanent=True)
            entry["type"] = row["type"]
            try:
                target, secret = open_channel(self._box, row["id"], row["target_enc"], row["secret_enc"])
            except SecretDecryptError as exc:
                raise NotifyFailed(f"cannot decrypt the channel: {exc}", permanent=True) from exc
            channel = Channel(
                id=row["id"], type=row["type"], target=target, secret=secret, config=row["config"]
            )
            answer = await self._sender.send(channel, notice)
        except NotifyFailed as exc:
            final = exc.permanent or attempt >= self._s.ops.notify_max_attempts
            self._metrics.notification(
                str(entry.get("type", "unknown")), notice.kind, "failed" if final else "retry"
            )
            if not final:
                delay = min(self._s.ops.notify_retry_delay_s * 2**job.attempts, 300.0)
                log.info(
                    "notify %s: attempt %d failed (%s), retry in %.1fs",
                    notice.dedupe_key,
                    attempt,
                    exc,
                    delay,
                    extra={**self._job_fields(job), "channel_id": notice.channel_id},
                )
                raise RetryRequested(delay=timedelta(seconds=delay), reason=str(exc)) from exc
            log.warning(
                "notify %s failed for good after %d attempts: %s",
                notice.dedupe_key,
                attempt,
                exc,
                extra={**self._job_fields(job), "channel_id": notice.channel_id},
            )
            await self._note(notice.history_id, {**entry, "status": "failed", "error": str(exc)[:500]})
            raise
        self._metrics.notification(str(entry["type"]), notice.kind, "sent")
        await self._note(notice.history_id, {**entry, "status": "sent", "answer": answer})

    def _job_fields(self, job: Job) -> dict[str, Any]:
        """The fields of a log line about one job (whk.logs emits them as JSON keys)."""
        return {
            "job_id": job.id,
            "job": job.entrypoint,
            "attempt": job.attempts + 1,
            "worker_id": self._ident,
        }

    async def _note(self, history_id: int | None, entry: dict[str, Any]) -> None:
        if history_id is None:
            return
        async with self._pool.connection() as conn:
            row = await (await conn.execute("SELECT clock_timestamp()")).fetchone()
            assert row is not None
            await self._repo.note(conn, history_id, {**entry, "at": row[0].isoformat()})


ScheduledJob = Callable[[Schedule], Awaitable[None]]


def once_per_tick(name: str, job: ScheduledJob) -> ScheduledJob:
    """``job`` run for a pick of its schedule that stands for a tick of its own, skipped otherwise.

    pgqueuer sets a picked schedule's next run to ``NOW() + delay`` truncated to the second, with the delay
    to the next cron tick computed in the worker a moment before the statement runs. When that moment
    falls just before a tick and the statement just after it, the next run lands on the tick being picked
    (``next_run <= updated``, the pick's own ``NOW()``), so the schedule is due again at once and a second
    pick, by this worker or another, runs the same tick again (seen with two workers on a one-second
    schedule). Such a pick is skipped: the schedule stays due, and the next pick runs the tick."""

    async def run(schedule: Schedule) -> None:
        if schedule.next_run <= schedule.updated:
            log.debug("%s: a pick for an already-due tick (next_run %s), skipped", name, schedule.next_run)
            return
        await job(schedule)

    return run


def _pgq_dsn(dsn: str) -> str:
    """asyncpg takes URL DSNs; libpq key=value strings are converted through psycopg's parser. The
    ``options`` (``-c role=…`` from ``whk.dbroles.with_role``) go along: asyncpg sends them in the startup
    packet as libpq does, so pgqueuer's connection acts as the same role as the pool's."""
    if "://" in dsn:
        return dsn
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(dsn)
    from urllib.parse import quote, urlencode

    host = str(parts.pop("host", "") or "")
    port = str(parts.pop("port", "") or "")
    user = quote(str(parts.pop("user", "") or ""))
    password = quote(str(parts.pop("password", "") or ""))
    dbname = quote(str(parts.pop("dbname", "") or ""))
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    query = {k: str(v) for k, v in parts.items() if k in ("sslmode", "options")}
    if host.startswith("/"):
        query["host"] = host
        host = ""
    netloc = f"{auth}{host}" + (f":{port}" if port and host else "")
    if port and not host:
        query["port"] = port
    return f"postgresql://{netloc}/{dbname}" + (f"?{urlencode(query)}" if query else "")


async def run_worker(settings: Settings, stop: asyncio.Event, *, ident: str | None = None) -> None:
    """Run the operations worker until ``stop`` is set."""
    ident = ident or worker_id()
    # Every connection (the pool and pgqueuer's) acts as WHK_DISPATCHER_DB_ROLE when it is set.
    settings = dbroles.with_role(settings, settings.dispatcher.db_role)
    dsn = db.require_dsn(settings)
    pool = await db.open_pool(settings, name=f"whk-worker-{ident}", autocommit=True)
    connection: Any = None
    metrics = OpsMetrics()
    stop_metrics = None
    if settings.ops.worker_metrics_port:
        host, port = settings.ops.worker_metrics_host, settings.ops.worker_metrics_port
        stop_metrics = serve(metrics, host, port)
        log.info("worker metrics on http://%s:%d/metrics", host, port)
    try:
        async with pool.connection() as conn:
            await db.acheck_schema_version(conn)
        connection = await asyncpg.connect(_pgq_dsn(dsn), timeout=settings.core.connect_timeout)
        names = DBSettings(db_schema="whk")
        driver = AsyncpgDriver(connection)
        queries = Queries(
            driver,
            qbe=qb.QueryBuilderEnvironment(settings=names),
            qbq=qb.QueryQueueBuilder(settings=names),
            qbs=qb.QuerySchedulerBuilder(settings=names),
        )
        async with httpx.AsyncClient(
            trust_env=False, follow_redirects=False, timeout=settings.ops.notify_timeout_s
        ) as client:
            jobs = Jobs(settings, pool, Sender(settings, client), ident, metrics)
            await jobs.seal_legacy_channels()
            await jobs.provision_pending()
            pgq = PgQueuer(connection=driver, queries=queries)
            pgq.entrypoint("notify", on_failure="hold")(jobs.notify)
            pgq.entrypoint("replay")(jobs.replay)
            pgq.entrypoint(PROVISION_ENTRYPOINT)(jobs.provision_secret)
            pgq.entrypoint("bulk_retry")(jobs.bulk_retry)
            for name, cron, job in (
                ("evaluate_alerts", settings.ops.eval_cron, jobs.evaluate_alerts),
                ("housekeeping", HOUSEKEEPING_CRON, jobs.housekeeping),
                ("retention", RETENTION_CRON, jobs.retention),
            ):
                pgq.schedule(name, cron)(once_per_tick(name, job))

            async def _stopper() -> None:
                await stop.wait()
                pgq.shutdown.set()

            watcher = asyncio.create_task(_stopper(), name="whk-worker-stop")
            log.info(
                "worker %s started (pid %d), alert evaluation %s", ident, os.getpid(), settings.ops.eval_cron
            )
            try:
                batch = max(1, settings.ops.worker_concurrency // 2)
                await pgq.run(
                    batch_size=batch,
                    max_concurrent_tasks=max(2 * batch, settings.ops.worker_concurrency),
                    heartbeat_timeout=timedelta(seconds=settings.ops.job_heartbeat_timeout_s),
                    dequeue_timeout=timedelta(seconds=max(1.0, settings.ops.alert_eval_every_s)),
                )
            finally:
                watcher.cancel()
            log.info("worker %s stopped", ident)
    finally:
        if stop_metrics is not None:
            stop_metrics()
        if connection is not None:
            await connection.close()
        await pool.close()


def main(settings: Settings) -> int:
    """Entry point of `whk worker`: run until SIGTERM/SIGINT (logging: configured by ``whk_cli``). Refuses
    to start against another schema version or, in production, as a superuser or the owner of WHK's
    tables, like the dispatcher (``whk.dbroles``)."""
    with db.connect(dbroles.with_role(settings, settings.dispatcher.db_role)) as conn:
        db.check_schema_version(conn)
        dbroles.check_role(conn, settings, "worker", log)

    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(settings, stop)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_run())
    return 0
