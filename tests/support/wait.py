"""Wait on a condition with a deadline, never for a fixed time.

A test that sleeps a fixed time either waits too long on a fast machine or too little on a loaded one.
These helpers poll a condition until it holds and fail, naming what was awaited, when the deadline
passes. The condition is always evaluated once more after the deadline, so a slow poll cannot turn a
met condition into a failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

__all__ = ["async_wait_for", "wait_for"]


def wait_for(condition: Callable[[], T], timeout: float, what: str, *, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns a truthy value, and return that value.

    Raises AssertionError naming ``what`` when it is still falsy after ``timeout`` seconds. Exceptions
    from ``condition`` propagate: catch the expected ones inside it (e.g. a server not listening yet).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


async def async_wait_for(
    condition: Callable[[], T | Awaitable[T]], timeout: float, what: str, *, interval: float = 0.05
) -> T:
    """``wait_for`` for the event loop: ``condition`` may be sync or async; the loop keeps running."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)
