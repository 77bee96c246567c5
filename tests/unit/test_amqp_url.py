"""``whk.amqp_url``: what an amqp:// webhook target or `whk source` URL means, and what it refuses; the
routing key a RabbitMQ target publishes with."""

from __future__ import annotations

import pytest

from dispatcher.amqp_target import routing_key
from whk.amqp_url import AmqpAddress, parse_amqp_source, parse_amqp_target
from whk.queue_targets import BrokerLogin, QueueUrlError


@pytest.mark.parametrize(
    ("url", "address", "exchange"),
    [
        ("amqp://mq.example.com?exchange=erp", AmqpAddress("mq.example.com", 5672, "/", False), "erp"),
        ("amqp://mq.example.com/?exchange=erp", AmqpAddress("mq.example.com", 5672, "/", False), "erp"),
        ("amqp://mq.example.com/%2F?exchange=erp", AmqpAddress("mq.example.com", 5672, "/", False), "erp"),
        (
            "amqps://mq.example.com/sales?exchange=a.b",
            AmqpAddress("mq.example.com", 5671, "sales", True),
            "a.b",
        ),
        ("amqp://10.0.0.1:5673/a%2Fb?exchange=x%20y", AmqpAddress("10.0.0.1", 5673, "a/b", False), "x y"),
    ],
)
def test_target_urls(url: str, address: AmqpAddress, exchange: str) -> None:
    target = parse_amqp_target(url)
    assert target.address == address
    assert target.exchange == exchange


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("amqp://mq.example.com/", "exchange"),
        ("amqp://mq.example.com/?exchange=", "exchange"),
        ("amqp://mq.example.com/?exchange=" + "x" * 256, "exchange"),
        ("amqp://mq.example.com/?exchange=a&queue=b", "queue"),
        ("amqp://guest:guest@mq.example.com/?exchange=a", "userinfo"),
        ("amqp://mq.example.com/a/b?exchange=a", "vhost"),
        ("amqp:///?exchange=a", "host"),
        ("amqp://mq.example.com:0/?exchange=a", "port"),
        ("amqp://mq.example.com:99999/?exchange=a", "url"),
        ("redis://mq.example.com/?exchange=a", "scheme"),
        ("amqp://mq.example.com/?exchange=a%0Db", "exchange"),
    ],
)
def test_bad_target_urls_name_the_part(url: str, field: str) -> None:
    with pytest.raises(QueueUrlError) as caught:
        parse_amqp_target(url)
    assert caught.value.field == field


def test_source_url_defaults_and_login() -> None:
    src = parse_amqp_source("amqp://app:s%40cret@127.0.0.1:5673/erp?queue=in")
    assert src.address == AmqpAddress("127.0.0.1", 5673, "erp", False)
    assert (src.queue, src.dead_letter_queue, src.prefetch) == ("in", "in.dead", 100)
    assert src.login == BrokerLogin("app", "s@cret")
    assert "s@cret" not in repr(src.login)
    full = parse_amqp_source("amqp://h/?queue=in&dead_letter_queue=bad&prefetch=10")
    assert (full.dead_letter_queue, full.prefetch, full.login) == ("bad", 10, None)


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("amqp://h/", "queue"),
        ("amqp://h/?queue=in&prefetch=0", "prefetch"),
        ("amqp://h/?queue=in&prefetch=10001", "prefetch"),
        ("amqp://h/?queue=in&prefetch=x", "prefetch"),
        ("amqp://h/?queue=in&dead_letter_queue=in", "dead_letter_queue"),
        ("amqp://h/?queue=in&exchange=x", "exchange"),
    ],
)
def test_bad_source_urls_name_the_part(url: str, field: str) -> None:
    with pytest.raises(QueueUrlError) as caught:
        parse_amqp_source(url)
    assert caught.value.field == field


def test_routing_key_is_the_event_type() -> None:
    assert routing_key(b'{"type":"order.created","timestamp":"t","data":{"type":"x"}}') == "order.created"
    assert routing_key(b'[{"type":"a.b"},{"type":"a.b"}]') == "a.b"  # a batch of one type
    assert routing_key(b'[{"type":"a.b"},{"type":"a.c"}]') == "batch"  # of several
    assert routing_key(b"not json") == "batch"
