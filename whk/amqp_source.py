"""A RabbitMQ queue as a WHK event source (``whk.queue_source.SourceBroker``), consumed with manual acks.

* A message's **body** is the event's JSON object (``data``); its event type is the message's ``type``
  property, else a ``type`` header, else the source's ``--event-type``; a ``key`` header is the ordering key.
* ``open`` connects (the URL's login, else guest), limits the unacknowledged messages to the URL's
  ``prefetch`` (``basic.qos``), checks that the queue exists (passively: the source never redeclares a queue
  someone else owns), makes sure the dead-letter queue exists (durable), and starts consuming.
* ``fetch`` waits up to ``wait_s`` for a first message, then takes what else has arrived, up to ``limit``.
  A lost connection raises (the process ends; its unacknowledged messages are back in the queue).
* ``reject`` publishes each bad message to the dead-letter queue through the default exchange, persistent,
  with its body, properties and headers plus ``reason``, ``source-queue`` and ``source-delivery-tag``, and
  waits for the broker's publisher confirms: only then is the batch acknowledged.
* ``ack`` acknowledges each message of the batch (``basic.ack``). Until then the broker holds them for this
  consumer; when the connection closes (the source is killed, the broker restarts) it requeues them and hands
  them out again (``redelivered``): nothing is acknowledged before its event is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
    HeadersType,
)

from whk.amqp_connect import amqp_connect
from whk.amqp_url import AmqpSourceUrl
from whk.errors import WhkError
from whk.queue_source import SourceMessage

__all__ = ["AmqpMessage", "AmqpQueueSource"]

_DEAD_HEADERS: Final = ("reason", "source-queue", "source-delivery-tag")


@dataclass(frozen=True, slots=True)
class AmqpMessage:
    """One delivered message: ``fields`` as ``whk.queue_source.read_message`` reads them."""

    id: str
    fields: Mapping[str, bytes]
    delivery: AbstractIncomingMessage


def _header_text(headers: HeadersType, name: str) -> bytes | None:
    value = headers.get(name)
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return str(value).encode("utf-8")


def _message(delivery: AbstractIncomingMessage) -> AmqpMessage:
    fields: dict[str, bytes] = {"data": delivery.body}
    headers = delivery.headers or {}
    own_type = delivery.type.encode("utf-8") if delivery.type else _header_text(headers, "type")
    if own_type is not None:
        fields["type"] = own_type
    key = _header_text(headers, "key")
    if key is not None:
        fields["key"] = key
    return AmqpMessage(str(delivery.delivery_tag), fields, delivery)


class AmqpQueueSource:
    """Consumes ``source.queue`` (see the module docstring); ``open`` before use, ``aclose`` after."""

    def __init__(
        self, source: AmqpSourceUrl, *, wait_s: float = 1.0, connect_timeout_s: float = 10.0
    ) -> None:
        self.source = source
        self._wait_s = wait_s
        self._connect_timeout = connect_timeout_s
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None

    async def open(self) -> None:
        src, login = self.source, self.source.login
        self._connection = await amqp_connect(
            host=src.address.host,
            port=src.address.port,
            login="guest" if login is None or login.user is None else login.user,
            password="guest" if login is None else login.password,
            virtualhost=src.address.vhost,
            ssl=src.address.tls,
            timeout=self._connect_timeout,
            client_properties={"connection_name": "whk-source"},
        )
        queue = await self._existing_queue(src.queue)
        if queue is None:
            raise WhkError(
                f"queue {src.queue!r} does not exist in virtual host {src.address.vhost!r}",
                hint="declare it (durable) and bind it to the exchange your services publish to",
            )
        if await self._existing_queue(src.dead_letter_queue) is None:
            setup = await self._connection.channel()
            await setup.declare_queue(src.dead_letter_queue, durable=True)
            await setup.close()
        self._channel = await self._connection.channel(publisher_confirms=True)
        await self._channel.set_qos(prefetch_count=src.prefetch)
        consumed = await self._channel.get_queue(src.queue, ensure=False)
        await consumed.consume(self._inbox.put, no_ack=False)

    async def _existing_queue(self, name: str) -> AbstractQueue | None:
        """The queue, checked passively on a channel of its own (a missing queue closes that channel)."""
        assert self._connection is not None
        probe = await self._connection.channel()
        try:
            return await probe.get_queue(name, ensure=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None
        finally:
            if not probe.is_closed:
                await probe.close()

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close; it is gone anyway
                await connection.close()

    def _check_open(self) -> None:
        if self._connection is None or self._connection.is_closed or self._channel is None:
            raise ConnectionError("the RabbitMQ connection is closed: unacknowledged messages are requeued")
        if self._channel.is_closed:
            raise ConnectionError("the RabbitMQ channel is closed: unacknowledged messages are requeued")

    async def fetch(self, limit: int) -> Sequence[SourceMessage]:
        self._check_open()
        try:
            first = await asyncio.wait_for(self._inbox.get(), self._wait_s)
        except TimeoutError:
            return []
        batch = [first]
        while len(batch) < limit and not self._inbox.empty():
            batch.append(self._inbox.get_nowait())
        return [_message(d) for d in batch]

    async def reject(self, rejected: Sequence[tuple[SourceMessage, str]]) -> None:
        self._check_open()
        assert self._channel is not None
        exchange = self._channel.default_exchange
        publishes = []
        for message, reason in rejected:
            assert isinstance(message, AmqpMessage)
            d = message.delivery
            headers: dict[str, aio_pika.abc.FieldValue] = {
                k: v for k, v in (d.headers or {}).items() if k not in _DEAD_HEADERS
            }
            headers.update(
                {"reason": reason, "source-queue": self.source.queue, "source-delivery-tag": message.id}
            )
            dead = aio_pika.Message(
                d.body,
                headers=headers,
                content_type=d.content_type,
                content_encoding=d.content_encoding,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=d.message_id,
                correlation_id=d.correlation_id,
                timestamp=d.timestamp,
                type=d.type,
                app_id=d.app_id,
            )
            publishes.append(exchange.publish(dead, self.source.dead_letter_queue, mandatory=True))
        # Confirmed (persisted by the broker) before the originals are acknowledged; a failure raises and
        # nothing of the batch is acknowledged (it is redelivered, and emitted again: at-least-once).
        await asyncio.gather(*publishes)

    async def ack(self, messages: Sequence[SourceMessage]) -> None:
        self._check_open()
        for message in messages:
            assert isinstance(message, AmqpMessage)
            await message.delivery.ack()
