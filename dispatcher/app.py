"""Composition root of `whk dispatcher`: settings in, signals wired, engine run until told to stop.

``main`` refuses to start against a schema version other than the one this code ships (via
``whk.db.check_schema_version``) or, in production, as a superuser or the owner of WHK's tables
(``whk.dbroles``; WHK_DISPATCHER_DB_ROLE makes every connection of a privileged DSN act as
``whk_dispatcher``), installs SIGTERM/SIGINT handlers that set one stop event, and returns 0 after a
clean shutdown (in-flight work finished or released within ``WHK_SHUTDOWN_GRACE``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

import uvloop

from dispatcher.amqp_target import AmqpTransport
from dispatcher.engine import Engine
from dispatcher.listener import listen_forever
from dispatcher.metrics import DispatcherMetrics, serve
from dispatcher.redis_target import RedisTransport
from dispatcher.repository import Repository
from dispatcher.sender import Sender
from dispatcher.transport import Transport, Transports
from whk import db, dbroles
from whk.settings import Settings

log = logging.getLogger("whk.dispatcher")


def dispatcher_id(settings: Settings) -> str:
    return settings.dispatcher.dispatcher_id or f"{socket.gethostname()}-{os.getpid()}"


async def run_dispatcher(settings: Settings, stop: asyncio.Event) -> None:
    """Run one dispatcher until ``stop`` is set; returns after a graceful shutdown."""
    ident = dispatcher_id(settings)
    # Every connection (pool and LISTEN) acts as WHK_DISPATCHER_DB_ROLE when it is set.
    settings = dbroles.with_role(settings, settings.dispatcher.db_role)
    # Its configuration changes (disable on 410, quarantine) write their own audit rows.
    settings = dbroles.with_audit_marker(settings, "dispatcher")
    dsn = db.require_dsn(settings)
    pool = await db.open_pool(settings, name=f"whk-dispatcher-{ident}", autocommit=True)
    try:
        async with pool.connection() as conn:
            await db.acheck_schema_version(conn)
        repo = Repository(pool, ident)
        metrics = DispatcherMetrics()
        stop_metrics = None
        if settings.dispatcher.metrics_port:
            host, port = settings.dispatcher.metrics_host, settings.dispatcher.metrics_port
            stop_metrics = serve(metrics, host, port)
            log.info("dispatcher metrics on http://%s:%d/metrics", host, port)
        try:
            async with Sender(settings) as sender:
                transports = Transports(sender, queue_transports(settings))
                engine = Engine(
                    settings,
                    repo,
                    transports,
                    dispatcher_id=ident,
                    listen=lambda wake: listen_forever(
                        dsn, wake, connect_timeout=settings.core.connect_timeout
                    ),
                    metrics=metrics,
                )
                log.info("dispatcher %s started (pid %d)", ident, os.getpid())
                log_ssrf_policy(settings, engine.ssrf_policy)
                try:
                    await engine.run(stop)
                finally:
                    await transports.aclose()  # broker connections
                log.info("dispatcher %s stopped: %s", ident, engine.stats)
        finally:
            if stop_metrics is not None:
                stop_metrics()
    finally:
        await pool.close()


def queue_transports(settings: Settings) -> dict[str, Transport]:
    """The queue transports by URL scheme (docs/queues.md); HTTP(S) is the ``Sender``."""
    redis = RedisTransport(settings)
    amqp = AmqpTransport(settings)
    return {"redis": redis, "rediss": redis, "amqp": amqp, "amqps": amqp}


def log_ssrf_policy(settings: Settings, fingerprint: str) -> None:
    """Say at start-up which private ranges this dispatcher lets requests reach: every dispatcher of a
    deployment must agree (health compares the fingerprints recorded in the heartbeat rows)."""
    nets = ",".join(str(n) for n in settings.core.allow_private_cidrs)
    if nets:
        log.warning(
            "SSRF policy %s: requests may reach %s (WHK_ALLOW_PRIVATE_CIDRS, WHK_ENV=%s)",
            fingerprint,
            nets,
            settings.core.environment,
        )
    else:
        log.info(
            "SSRF policy %s: no private range is exempt (WHK_ALLOW_PRIVATE_CIDRS empty, WHK_ENV=%s)",
            fingerprint,
            settings.core.environment,
        )


def main(settings: Settings) -> int:
    """Entry point of `whk dispatcher`: run until SIGTERM/SIGINT, exit 0 after a clean shutdown. Logging
    is configured by the caller (``whk_cli``, ``whk.logs``)."""
    with db.connect(dbroles.with_role(settings, settings.dispatcher.db_role)) as conn:
        db.check_schema_version(conn)
        dbroles.check_role(conn, settings, "dispatcher", log)

    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_dispatcher(settings, stop)

    # uvloop (a pgqueuer dependency) roughly halves the event loop's cost per request.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_run())
    return 0
