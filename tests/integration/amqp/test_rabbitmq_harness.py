"""The RabbitMQ harness itself: loopback only, private port mapper, a restart keeps durable data."""

from __future__ import annotations

import psutil
import pytest

from tests.support.rabbitmq import RabbitServer

pytestmark = pytest.mark.slow


def _listeners(pid: int) -> set[tuple[str, int]]:
    proc = psutil.Process(pid)
    found: set[tuple[str, int]] = set()
    for p in [proc, *proc.children(recursive=True)]:
        for c in p.net_connections(kind="inet"):
            if c.status == psutil.CONN_LISTEN:
                found.add((c.laddr.ip, c.laddr.port))
    return found


async def test_node_listens_on_loopback_only_with_its_own_port_mapper(
    rabbitmq_server: RabbitServer,
) -> None:
    assert rabbitmq_server._server is not None and rabbitmq_server._epmd is not None
    node = _listeners(rabbitmq_server._server.pid)
    assert ("127.0.0.1", rabbitmq_server.port) in node
    assert ("127.0.0.1", rabbitmq_server.dist_port) in node
    assert {ip for ip, _ in node} == {"127.0.0.1"}
    mapper = _listeners(rabbitmq_server._epmd.pid)
    assert {port for _, port in mapper} == {rabbitmq_server.epmd_port}
    assert {ip for ip, _ in mapper} <= {"127.0.0.1", "::1"}
