"""One private RabbitMQ node per test session (it takes seconds to boot), shared by the AMQP tests.

Tests isolate themselves by name (their own exchanges and queues), not by server. A fault test that
restarts the node leaves it running again.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.rabbitmq import RabbitServer, rabbitmq_available, start_rabbitmq


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[RabbitServer]:
    if not rabbitmq_available():
        pytest.fail("rabbitmq-server is not installed: run scripts/setup-brokers (make test does)")
    server = start_rabbitmq()
    try:
        yield server
    finally:
        server.stop()
        server.cleanup()
