"""whk.testing, the receivers' pytest plugin: receiver, signing, factory, assertions, waits, packaging.

Signatures made by the plugin are checked with the independent ``standardwebhooks`` package, and the
receiver's verdicts with requests signed by it, so the plugin is never only checked against itself.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import pytest
import standardwebhooks

from whk.signing import generate_secret
from whk.testing import EventFactory, InvalidEvent, Receiver, sign_request
from whk.testing.receiver import Received


def _post(receiver: Receiver, payload: Any, secret: str | None = None, **kw: Any) -> httpx.Response:
    signed = sign_request(payload, secret or receiver.secret, **kw)
    return httpx.post(receiver.url + "hooks/orders", content=signed.body, headers=dict(signed.headers))


def test_fixtures_come_from_the_pytest11_entry_point(request: pytest.FixtureRequest):
    plugins = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="pytest11")}
    assert plugins.get("whk") == "whk.testing.plugin"
    assert request.config.pluginmanager.has_plugin("whk")
    for name in ("whk_receiver", "whk_receiver_factory", "whk_event_factory", "whk_sign"):
        assert request.getfixturevalue(name) is not None


def test_the_plugin_imports_neither_api_nor_dispatcher():
    code = (
        "import sys, whk.testing, whk.testing.plugin\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('api', 'dispatcher', 'tests'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_receiver_verifies_and_records(whk_receiver: Receiver, whk_event_factory: EventFactory):
    event = whk_event_factory("order.created", new={"id": 1})
    assert _post(whk_receiver, event).status_code == 200
    assert _post(whk_receiver, event, secret=generate_secret()).status_code == 401
    assert _post(whk_receiver, event, timestamp=int(time.time()) - 3600).status_code == 401
    assert httpx.put(whk_receiver.url + "x", content=b"{}").status_code == 401  # unsigned, any method

    got = whk_receiver.wait_for(4)
    assert [r.verified for r in got] == [True, False, False, False]
    assert got[1].reason is not None and got[1].reason.startswith("no_match")
    assert got[2].reason is not None and got[2].reason.startswith("timestamp_too_old")
    assert got[3].reason is not None and got[3].reason.startswith("unsigned")
    assert got[3].method == "PUT"
    assert got[0].event == event
    assert got[0].path == "/hooks/orders"


def test_the_timestamp_tolerance_is_the_receivers(whk_receiver_factory: Any):
    receiver = whk_receiver_factory(tolerance=5)
    assert _post(receiver, {"x": 1}, timestamp=int(time.time()) - 60).status_code == 401
    assert _post(receiver, {"x": 1}).status_code == 200
    assert [r.verified for r in receiver.wait_for(2)] == [False, True]
    known = whk_receiver_factory(secret=receiver.secret)
    assert known.secret == receiver.secret and known.url != receiver.url
    assert _post(known, {"x": 1}, secret=receiver.secret).status_code == 200


def test_a_rotated_secret_is_accepted(whk_receiver: Receiver):
    old, new = whk_receiver.secret, generate_secret()
    whk_receiver.use_secret(new, old)  # during a rotation WHK signs with both; either verifies
    assert _post(whk_receiver, {"x": 1}, secret=old).status_code == 200
    assert _post(whk_receiver, {"x": 1}, secret=new).status_code == 200
    whk_receiver.use_secret(new)
    assert _post(whk_receiver, {"x": 1}, secret=old).status_code == 401


def test_whk_sign_matches_standard_webhooks(whk_sign: Any):
    secret = generate_secret()
    signed = whk_sign({"type": "order.created", "data": {}}, secret)
    standardwebhooks.Webhook(secret).verify(signed.body, dict(signed.headers))
    old = whk_sign(b"[1]", [generate_secret(), secret], msg_id="msg_1", timestamp=int(time.time()))
    assert old.headers["webhook-id"] == "msg_1"
    assert old.headers["webhook-signature"].count("v1,") == 2  # one per secret, as during a rotation
    standardwebhooks.Webhook(secret).verify(old.body, dict(old.headers))


def test_the_receiver_plays_a_scenario(whk_receiver: Receiver):
    whk_receiver.play([503, 503, {"status": 200, "delay_ms": 50}, {"status": 202, "drip_ms": 100}])
    statuses = [_post(whk_receiver, {"n": i}).status_code for i in range(5)]
    assert statuses == [503, 503, 200, 202, 200]
    got = whk_receiver.received
    assert [r.replied_status for r in got] == statuses
    dripped = httpx.post(whk_receiver.url, content=b"{}")  # the scenario is over: 200 whatever the signature
    assert dripped.status_code == 200 and dripped.json() == {"status": 200}


def test_random_failures_follow_the_seed(whk_receiver: Receiver):
    from whk.mockscenario import Scenario, reply_for

    scenario = Scenario(fail_rate=0.5, seed=11)
    whk_receiver.play('{"fail_rate": 0.5, "seed": 11}')
    statuses = [_post(whk_receiver, {"n": i}).status_code for i in range(20)]
    assert statuses == [reply_for(scenario, n).status for n in range(20)]
    assert {503, 200} == set(statuses)


def test_assert_event_finds_or_explains(whk_receiver: Receiver, whk_event_factory: EventFactory):
    _post(whk_receiver, whk_event_factory("order.created", new={"id": 7, "total": 10}))
    _post(whk_receiver, whk_event_factory("user.created", new={"id": 1}))
    received = whk_receiver.wait_for(2)
    hit = received.assert_event("order.created", where={"data.new.id": 7})
    assert hit.event["data"]["new"]["total"] == 10
    received.assert_event("order.created", where=lambda e: e["data"]["new"]["total"] > 5, count=1)
    with pytest.raises(AssertionError, match=r"no order\.created event matching"):
        received.assert_event("order.created", where={"data.new.id": 8})
    with pytest.raises(AssertionError, match=r"no order\.shipped"):
        received.assert_event("order.shipped")
    with pytest.raises(AssertionError, match="expected 2"):
        received.assert_event("order.created", count=2)


def test_assert_signed_by(whk_receiver: Receiver):
    _post(whk_receiver, {"a": 1})
    received = whk_receiver.wait_for(1)
    received.assert_signed_by(whk_receiver.secret)
    with pytest.raises(AssertionError, match="not signed by the secret"):
        received.assert_signed_by(generate_secret())
    with pytest.raises(AssertionError, match="nothing was received"):
        Received([]).assert_signed_by(whk_receiver.secret)


def test_assert_in_order_per_key_ignores_retries(whk_receiver: Receiver, whk_event_factory: EventFactory):
    def event(order: int, seq: int) -> dict[str, Any]:
        return whk_event_factory("order.updated", new={"id": order, "seq": seq})

    whk_receiver.play([200, 503, 200, 200, 200])
    _post(whk_receiver, event(1, 1), msg_id="m1")
    _post(whk_receiver, event(1, 2), msg_id="m2")  # 503: not accepted
    _post(whk_receiver, event(2, 1), msg_id="m3")
    _post(whk_receiver, event(1, 2), msg_id="m2")  # the retry is accepted
    _post(whk_receiver, event(1, 2), msg_id="m2")  # a duplicate: ignored
    received = whk_receiver.wait_for(5)
    received.assert_in_order(key="data.new.id", by="data.new.seq")
    assert [r.msg_id for r in received.accepted()] == ["m1", "m3", "m2"]

    _post(whk_receiver, event(2, 0), msg_id="m4")  # key 2 goes backwards
    with pytest.raises(AssertionError, match="out of order for key 2"):
        whk_receiver.wait_for(6).assert_in_order(key="data.new.id", by="data.new.seq")
    # the default order is the envelope's timestamp
    whk_receiver.received.assert_in_order(key=lambda e: e["data"]["new"]["id"])


def test_waits_have_deadlines_and_wake_on_arrival(whk_receiver: Receiver):
    with pytest.raises(AssertionError, match=r"timed out after 0.2s waiting for 1 requests"):
        whk_receiver.wait_for(1, timeout=0.2)
    sender = threading.Thread(target=_post, args=(whk_receiver, {"type": "order.created", "data": {}}))
    sender.start()
    hit = whk_receiver.wait_for_event("order.created", timeout=10)
    sender.join()
    assert hit.verified


async def test_async_waits_leave_the_event_loop_free(whk_receiver: Receiver):
    async def send_later() -> None:
        await asyncio.sleep(0)
        async with httpx.AsyncClient() as client:
            signed = sign_request({"type": "user.login", "data": {}}, whk_receiver.secret)
            await client.post(whk_receiver.url, content=signed.body, headers=dict(signed.headers))

    task = asyncio.create_task(send_later())
    hit = await whk_receiver.wait_for_event_async("user.login", timeout=10)
    await task
    assert hit.replied_status == 200
    got = await whk_receiver.wait_for_async(1)
    assert len(got) == 1


def test_the_factory_builds_every_type_and_version(whk_event_factory: EventFactory):
    assert "order.created" in whk_event_factory.names
    for name in whk_event_factory.names:
        for version in whk_event_factory.versions(name):
            envelope = whk_event_factory(name, version)
            assert envelope["type"] == name
            whk_event_factory.check(name, envelope["data"], version)


def test_factory_overrides_merge_and_are_validated(whk_event_factory: EventFactory):
    env = whk_event_factory("order.shipped", new={"id": "A-1", "total": 9.5}, table="orders")
    assert env["data"]["new"] == {"id": "A-1", "status": "shipped", "total": 9.5}
    assert env["data"]["table"] == "orders"
    assert env["data"]["op"] == "UPDATE"
    with pytest.raises(InvalidEvent, match="new/status"):
        whk_event_factory("order.shipped", new={"status": "pending"})
    broken = whk_event_factory("order.shipped", new={"status": "pending"}, validate=False)
    assert broken["data"]["new"]["status"] == "pending"
    with pytest.raises(KeyError, match="unknown event type"):
        whk_event_factory("order.teleported")
    with pytest.raises(KeyError, match=r"no version 9\.0"):
        whk_event_factory("order.created", "9.0")


def test_factory_for_event_types_of_ones_own():
    factory = EventFactory(
        {
            "invoice.paid": {
                "versions": {
                    "1.0": {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}},
                    "2.0": {
                        "type": "object",
                        "required": ["id", "amount"],
                        "properties": {
                            "id": {"type": "string"},
                            "amount": {"type": "number", "minimum": 100},
                        },
                    },
                }
            }
        }
    )
    assert factory.versions("invoice.paid") == ["1.0", "2.0"]
    assert isinstance(factory("invoice.paid", "1.0")["data"]["id"], int)
    latest = factory("invoice.paid")["data"]
    assert isinstance(latest["id"], str) and latest["amount"] >= 100
