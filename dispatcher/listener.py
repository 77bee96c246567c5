"""LISTEN on the capture side's wake-up channel, forever, reconnecting with backoff.

A listener that dies silently turns a 1 ms dispatcher into a poller (pgqueuer #224, pg-boss #850), so
the connection is probed whenever no notification arrived for a few seconds, and every (re)connect
wakes the engine once: notifications sent while we were disconnected are lost, the outbox is not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg
from psycopg_pool import PoolTimeout

CHANNEL = "whk_outbox"
APPLICATION_NAME = "whk-dispatcher-listener"
_PROBE_AFTER_S = 5.0
_BACKOFF_MAX_S = 5.0

log = logging.getLogger("whk.dispatcher.listener")


async def listen_forever(dsn: str, on_notify: Callable[[], None], *, connect_timeout: float = 5.0) -> None:
    """Call ``on_notify`` for every NOTIFY on ``whk_outbox``, surviving server restarts, until cancelled."""
    backoff = 0.1
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(
                dsn,
                autocommit=True,
                connect_timeout=max(1, round(connect_timeout)),
                application_name=APPLICATION_NAME,
            )
            async with conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                if backoff > 0.1:
                    log.info("listening on %s again", CHANNEL)
                backoff = 0.1
                on_notify()
                while True:
                    async for _ in conn.notifies(timeout=_PROBE_AFTER_S):
                        on_notify()
                    await conn.execute("SELECT 1")
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, OSError) as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", text, backoff)
            on_notify()  # poll once meanwhile: we may have missed notifications
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)
