"""The pytest plugin (entry point ``pytest11: whk = whk.testing.plugin``): fixtures for receiving apps.

Fixtures are function-scoped: each test gets a fresh receiver (own port, own secret, empty record).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from whk.testing.events import EventFactory
from whk.testing.receiver import Receiver
from whk.testing.signer import SignedRequest, sign_request

__all__ = ["whk_event_factory", "whk_receiver", "whk_receiver_factory", "whk_sign"]


@pytest.fixture
def whk_receiver() -> Iterator[Receiver]:
    """A running receiver on 127.0.0.1 (``.url``, ``.secret``, ``.received``, ``.play(...)``)."""
    with Receiver() as receiver:
        yield receiver


@pytest.fixture
def whk_receiver_factory() -> Iterator[Callable[..., Receiver]]:
    """``whk_receiver_factory(secret=None, tolerance=300, extra_secrets=())`` → another running receiver
    (several targets, a known secret, a tighter tolerance); all are closed after the test."""
    made: list[Receiver] = []

    def make(**kwargs: Any) -> Receiver:
        receiver = Receiver(**kwargs)
        made.append(receiver)
        return receiver

    try:
        yield make
    finally:
        for receiver in made:
            receiver.close()


@pytest.fixture(scope="session")
def _whk_catalogue_factory() -> EventFactory:
    return EventFactory.packaged()


@pytest.fixture
def whk_event_factory(_whk_catalogue_factory: EventFactory) -> EventFactory:
    """``whk_event_factory("order.created", new={"id": 7})`` → a valid envelope (dict)."""
    return _whk_catalogue_factory


@pytest.fixture
def whk_sign() -> Callable[..., SignedRequest]:
    """``whk_sign(payload, secret, msg_id=None, timestamp=None)`` → body and headers as WHK sends them."""

    def sign(payload: Any, secret: Any, **kwargs: Any) -> SignedRequest:
        return sign_request(payload, secret, **kwargs)

    return sign
