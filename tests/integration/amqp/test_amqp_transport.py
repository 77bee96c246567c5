"""The RabbitMQ transport against a real broker: confirms, refusals and lost brokers as attempt results."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator

import aio_pika
import msgspec
import port_for
import pytest
import standardwebhooks
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue

from dispatcher.amqp_target import AmqpTransport
from dispatcher.attempt import OutboundRequest
from dispatcher.classify import classify, is_failure
from tests.support.rabbitmq import RabbitServer
from tests.support.wait import async_wait_for
from whk.amqp_connect import amqp_connect
from whk.settings import load_settings
from whk.signing import decode_secret, generate_secret
from whk.webhook_request import request_headers

pytestmark = pytest.mark.slow

LOOPBACK = load_settings({"WHK_ALLOW_PRIVATE_CIDRS": "127.0.0.0/8", "WHK_ENV": "development"})
# Production with no private range exempt: loopback brokers are refused.
STRICT = load_settings({"WHK_ALLOW_PRIVATE_CIDRS": "", "WHK_ENV": "production"})


@pytest.fixture
async def channel(rabbitmq_server: RabbitServer) -> AsyncIterator[AbstractChannel]:
    connection: AbstractConnection = await amqp_connect(rabbitmq_server.url())
    try:
        yield await connection.channel()
    finally:
        await connection.close()


async def _bound_queue(channel: AbstractChannel, binding: str = "#") -> tuple[str, AbstractQueue]:
    """A fresh topic exchange and a queue bound to it with ``binding``."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, auto_delete=True)
    queue = await channel.declare_queue(f"{name}.q", auto_delete=True)
    await queue.bind(exchange, binding)
    return name, queue


def _request(
    url: str, secret: str, event_type: str = "order.created", *, login: str | None = "guest:guest"
) -> OutboundRequest:
    body = f'{{"type":"{event_type}","timestamp":"2026-12-07T13:00:00Z","data":{{"id":1}}}}'.encode()
    headers = request_headers(
        msg_id=f"msg_{uuid.uuid4().hex}",
        timestamp=int(time.time()),
        body=body,
        signing_keys=[decode_secret(secret)],
        fixed_headers=_basic(login),
        user_agent="test",
    )
    return OutboundRequest(method="POST", url=url, headers=headers, body=body, deadline_s=10.0)


def _basic(login: str | None) -> list[tuple[str, str]]:
    if login is None:
        return []
    return [("Authorization", "Basic " + base64.b64encode(login.encode()).decode())]


def _target(server: RabbitServer, exchange: str) -> str:
    return f"amqp://127.0.0.1:{server.port}/?exchange={exchange}"


async def test_confirmed_message_is_persistent_signed_and_routed_by_event_type(
    rabbitmq_server: RabbitServer, channel: AbstractChannel
) -> None:
    exchange, queue = await _bound_queue(channel, "order.*")
    secret = generate_secret()
    req = _request(_target(rabbitmq_server, exchange), secret)
    transport = AmqpTransport(LOOPBACK)
    try:
        [result] = await transport.send([req])
        [link] = transport._links.values()
        [again] = await transport.send([_request(_target(rabbitmq_server, exchange), secret)])
        assert again.status == 200
        assert list(transport._links.values()) == [link]  # one connection and channel, reused
    finally:
        await transport.aclose()
    assert result.status == 200, result
    assert classify(result, require_ack=False).kind == "delivered"
    message = await queue.get(timeout=5)
    await message.ack()
    await (await queue.get(timeout=5)).ack()
    assert message.body == req.body
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.routing_key == "order.created"
    headers = {k: str(v) for k, v in message.headers.items()}
    assert "authorization" not in {k.lower() for k in headers}  # the login never rides in a message
    assert message.message_id == headers["webhook-id"]
    standardwebhooks.Webhook(secret).verify(message.body, headers)


async def test_unroutable_and_missing_exchange_are_retryable_refusals_that_spare_the_others(
    rabbitmq_server: RabbitServer, channel: AbstractChannel
) -> None:
    exchange, queue = await _bound_queue(channel, "invoice.*")
    secret = generate_secret()
    unroutable = _request(_target(rabbitmq_server, exchange), secret, "order.created")
    missing = _request(_target(rabbitmq_server, f"absent-{uuid.uuid4().hex[:6]}"), secret)
    fine = _request(_target(rabbitmq_server, exchange), secret, "invoice.paid")
    transport = AmqpTransport(LOOPBACK)
    try:
        results = await transport.send([unroutable, missing, fine])
        again = await transport.send([fine])  # the shared connection survived the refusals
    finally:
        await transport.aclose()
    assert [r.status for r in results] == [500, 500, 200], results
    assert "unroutable" in (results[0].error_detail or "")
    assert "does not exist" in (results[1].error_detail or "")
    assert [classify(r, require_ack=False).kind for r in results[:2]] == ["retry", "retry"]
    assert again[0].status == 200
    for _ in range(2):
        got = await queue.get(timeout=5)
        assert got.routing_key == "invoice.paid"
        await got.ack()


async def test_no_broker_and_refused_login_are_failures_for_the_breaker(
    rabbitmq_server: RabbitServer,
) -> None:
    secret = generate_secret()
    closed_port = port_for.select_random()
    nobody = _request(f"amqp://127.0.0.1:{closed_port}/?exchange=amq.topic", secret)
    bad_login = _request(_target(rabbitmq_server, "amq.topic"), secret, login="guest:wrong")
    transport = AmqpTransport(LOOPBACK)
    try:
        results = await transport.send([nobody, bad_login])
    finally:
        await transport.aclose()
    assert results[0].status is None and results[0].error_class == "refused", results[0]
    assert results[1].status is None and results[1].error_class == "connect", results[1]
    assert all(is_failure(classify(r, require_ack=False)) for r in results)


async def test_ssrf_policy_applies_to_broker_addresses(rabbitmq_server: RabbitServer) -> None:
    req = _request(_target(rabbitmq_server, "amq.topic"), generate_secret())
    transport = AmqpTransport(STRICT)
    try:
        [result] = await transport.send([req])
    finally:
        await transport.aclose()
    assert result.error_class == "ssrf_blocked", result


async def test_a_broker_that_stops_confirming_is_a_timeout_then_a_new_connection(
    rabbitmq_server: RabbitServer, channel: AbstractChannel
) -> None:
    exchange, queue = await _bound_queue(channel)
    secret = generate_secret()
    transport = AmqpTransport(LOOPBACK)
    try:
        [first] = await transport.send([_request(_target(rabbitmq_server, exchange), secret)])
        assert first.status == 200
        [link] = transport._links.values()
        # A memory alarm: the broker stops reading what publishers send (connection.blocked), so no confirm.
        await asyncio.to_thread(rabbitmq_server.ctl, "set_vm_memory_high_watermark", "0.0000001")
        try:
            stuck = _request(_target(rabbitmq_server, exchange), secret)
            stuck = msgspec.structs.replace(stuck, deadline_s=2.0)
            [result] = await transport.send([stuck])
        finally:
            await asyncio.to_thread(rabbitmq_server.ctl, "set_vm_memory_high_watermark", "0.4")
        assert result.status is None and result.error_class == "timeout", result
        assert classify(result, require_ack=False).kind == "throttle"
        assert link not in transport._links.values()  # the suspect connection is dropped

        async def confirmed_again() -> bool:
            [again] = await transport.send([_request(_target(rabbitmq_server, exchange), secret)])
            return again.status == 200

        await async_wait_for(confirmed_again, 30, "a confirm on a new connection")
    finally:
        await transport.aclose()
    await queue.purge()
