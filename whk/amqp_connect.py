"""One way to open an AMQP connection that leaves nothing behind when it fails.

``aio_pika.connect`` builds a ``Connection`` and awaits its ``connect()``; when that raises (broker down,
refused login, timeout) the half-made connection is dropped unclosed. Its ``__del__`` then schedules
``close()`` on whatever event loop is current when the garbage collector gets to it, and when none is
running the coroutine is never awaited: a ``RuntimeWarning`` at a random later moment, and a socket or a
reconnecting transport kept until then. The dispatcher's exchange targets, ``whk source`` and the test
harness's readiness probe all connect through :func:`amqp_connect`, which closes such a connection before
the error propagates.
"""

from __future__ import annotations

import contextlib
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection, TimeoutType


class _ClosedOnFailure(aio_pika.Connection):
    """An ``aio_pika.Connection`` that closes itself when its first connect fails."""

    async def connect(self, timeout: TimeoutType = None) -> None:  # noqa: ASYNC109 - aio_pika's signature
        try:
            await super().connect(timeout)
        except BaseException:
            with contextlib.suppress(Exception):  # closing what never opened may fail too; it is gone
                await self.close()
            raise


async def amqp_connect(url: str | None = None, **kwargs: Any) -> AbstractConnection:
    """``aio_pika.connect(url, **kwargs)``, closing the connection when connecting fails."""
    connection: AbstractConnection = await aio_pika.connect(url, connection_class=_ClosedOnFailure, **kwargs)
    return connection
