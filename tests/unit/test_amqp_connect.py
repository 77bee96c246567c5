"""A failed AMQP connect leaves no half-made connection for the garbage collector to close later."""

from __future__ import annotations

import gc
import socket
from typing import Any

import aio_pika
import pytest
from aio_pika.connection import make_url

from whk.amqp_connect import _ClosedOnFailure, amqp_connect


def _refusing_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_connection_whose_connect_fails_is_closed_before_the_error_propagates() -> None:
    url = make_url(f"amqp://guest:guest@127.0.0.1:{_refusing_port()}/")
    plain, closing = aio_pika.Connection(url), _ClosedOnFailure(url)
    for connection in (plain, closing):
        with pytest.raises(ConnectionError):
            await connection.connect(timeout=5)
    # aio_pika's own class stays open: its __del__ would schedule close() on whatever loop runs at
    # collection time (a "never awaited" coroutine when none does).
    assert not plain.is_closed
    await plain.close()
    assert closing.is_closed


def _open_connections() -> list[aio_pika.Connection]:
    return [o for o in gc.get_objects() if isinstance(o, aio_pika.Connection) and not o.is_closed]


@pytest.mark.parametrize(
    "connect", [amqp_connect, aio_pika.connect], ids=["amqp_connect", "aio_pika.connect"]
)
async def test_amqp_connect_leaves_no_open_connection_behind(connect: Any) -> None:
    gc.collect()
    gc.disable()  # the half-made connection, if any, stays findable until we look
    try:
        with pytest.raises(ConnectionError):
            await connect(f"amqp://guest:guest@127.0.0.1:{_refusing_port()}/", timeout=5)
        left = _open_connections()
        for connection in left:  # aio_pika's own helper leaves one: close it here, not at collection time
            await connection.close()
    finally:
        gc.enable()
    assert len(left) == (0 if connect is amqp_connect else 1)
