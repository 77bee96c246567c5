"""The shared condition waits of tests/support/wait.py."""

from __future__ import annotations

import itertools

import pytest

from tests.support.wait import async_wait_for, wait_for


def test_wait_for_returns_the_first_truthy_value():
    counter = itertools.count()
    assert wait_for(lambda: next(counter) >= 3 and "ready", 5, "the counter", interval=0) == "ready"


def test_wait_for_names_what_it_waited_for():
    with pytest.raises(AssertionError, match="waiting for the impossible"):
        wait_for(lambda: False, 0.05, "the impossible", interval=0.01)


def test_a_zero_timeout_still_checks_once():
    calls = []
    assert wait_for(lambda: calls.append(1) or len(calls) > 0, 0, "one call")
    assert calls == [1]


async def test_async_wait_for_accepts_sync_and_async_conditions():
    counter = itertools.count()

    async def later() -> bool:
        return next(counter) >= 2

    assert await async_wait_for(later, 5, "the async counter", interval=0) is True
    assert await async_wait_for(lambda: 7, 5, "a value") == 7
    with pytest.raises(AssertionError, match="waiting for nothing"):
        await async_wait_for(lambda: 0, 0.05, "nothing", interval=0.01)
