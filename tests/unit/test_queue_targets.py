"""Queue target URLs (whk.queue_targets): what a redis:// webhook URL means, and the broker login."""

from __future__ import annotations

import base64

import pytest

from whk.queue_targets import DEFAULT_MAXLEN, BrokerLogin, QueueUrlError, broker_login, parse_redis_url


def test_redis_url_names_stream_cap_and_db() -> None:
    t = parse_redis_url("redis://cache.example.com/orders%3Aeu?maxlen=5000&db=3")
    assert (t.host, t.port, t.db, t.stream, t.maxlen, t.tls) == (
        "cache.example.com",
        6379,
        3,
        "orders:eu",
        5000,
        False,
    )
    t = parse_redis_url("rediss://[2001:db8::1]:6380/s")
    assert (t.host, t.port, t.stream, t.maxlen, t.tls) == ("2001:db8::1", 6380, "s", DEFAULT_MAXLEN, True)


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("redis://cache.example.com", "stream"),
        ("redis://cache.example.com/", "stream"),
        ("redis://cache.example.com/s?maxlen=0", "maxlen"),
        ("redis://cache.example.com/s?maxlen=1000000001", "maxlen"),
        ("redis://cache.example.com/s?maxlen=-5", "maxlen"),
        ("redis://cache.example.com/s?db=256", "db"),
        ("redis://cache.example.com/s?ttl=1", "ttl"),
        ("redis://:pw@cache.example.com/s", "userinfo"),
        ("amqp://cache.example.com/s", "scheme"),
        ("redis:///s", "host"),
        ("redis://cache.example.com:99999/s", "url"),
    ],
)
def test_bad_redis_urls_name_the_part(url: str, field: str) -> None:
    with pytest.raises(QueueUrlError) as err:
        parse_redis_url(url)
    assert err.value.field == field


def test_source_url_may_carry_a_login_that_is_never_printed() -> None:
    t = parse_redis_url("redis://app:s%40cret@127.0.0.1/in", allow_login=True)
    assert t.login == BrokerLogin("app", "s@cret")
    assert "s@cret" not in repr(t)


def _basic(text: str) -> list[tuple[str, str]]:
    return [
        ("Content-Type", "application/json"),
        ("Authorization", "Basic " + base64.b64encode(text.encode()).decode()),
    ]


def test_broker_login_comes_from_the_basic_credential() -> None:
    assert broker_login(_basic("app:pw:with:colons")) == BrokerLogin("app", "pw:with:colons")
    assert broker_login(_basic(":only-password")) == BrokerLogin(None, "only-password")
    assert broker_login([("Authorization", "Bearer x")]) is None
    assert broker_login([("Authorization", "Basic !!!")]) is None
    assert broker_login([]) is None
