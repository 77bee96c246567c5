"""Composition root of `whk dispatcher`: settings in, signals wired, engine run until told to stop.

``main`` refuses to start against a schema version other than the one this code ships (via
``whk.db.check_schema_version``), installs SIGTERM/SIGINT handlers that set one stop event, and returns
0 after a clean shutdown (in-flight work finished or released within ``WHK_SHUTDOWN_GRACE``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

import uvloop

from dispatcher.engine import Engine
from dispatcher.listener import listen_forever
from dispatcher.metrics import DispatcherMetrics, serve
from dispatcher.repository import Repository
from dispatcher.sender import Sender
from whk import db
from whk.settings import Settings

log = logging.getLogger("whk.dispatcher")


def dispatcher_id(settings: Settings) -> str:
    return settings.dispatcher.dispatcher_id or f"{socket.gethostname()}-{os.getpid()}"


async def run_dispatcher(settings: Settings, stop: asyncio.Event) -> None:
    """Run one dispatcher until ``stop`` is set; returns after a graceful shutdown."""
    ident = dispatcher_id(settings)
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
                engine = Engine(
                    settings,
                    repo,
                    sender,
                    dispatcher_id=ident,
                    listen=lambda wake: listen_forever(
                        dsn, wake, connect_timeout=settings.core.connect_timeout
                    ),
                    metrics=metrics,
                )
                log.info("dispatcher %s started (pid %d)", ident, os.getpid())
                await engine.run(stop)
                log.info("dispatcher %s stopped: %s", ident, engine.stats)
        finally:
            if stop_metrics is not None:
                stop_metrics()
    finally:
        await pool.close()


def main(settings: Settings) -> int:
    """Entry point of `whk dispatcher`: run until SIGTERM/SIGINT, exit 0 after a clean shutdown."""
    logging.basicConfig(
        level=settings.core.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.core.allow_private_cidrs:
        log.warning(
            "WHK_ALLOW_PRIVATE_CIDRS=%s: the SSRF guard lets requests reach these private ranges",
            ",".join(str(n) for n in settings.core.allow_private_cidrs),
        )
    with db.connect(settings) as conn:
        db.check_schema_version(conn)

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
