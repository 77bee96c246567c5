"""The receiving app's tests, written with WHK's pytest plugin (no WHK server needed)."""

from __future__ import annotations

import os
import time

import httpx
import pytest
from conftest import APP_SECRET
from orders_app import OrdersApp, Partner


def deliver(url: str, signed) -> int:
    return httpx.post(url, content=signed.body, headers=dict(signed.headers)).status_code


def test_a_signed_order_is_processed(app: OrdersApp, app_url: str, whk_event_factory, whk_sign):
    event = whk_event_factory("order.created", new={"id": 42, "status": "new", "total": 120.5})
    assert deliver(app_url, whk_sign(event, APP_SECRET)) == 204
    assert app.orders[42]["total"] == 120.5


@pytest.mark.parametrize("event_type", ["order.created", "order.updated", "order.cancelled", "order.shipped"])
def test_every_order_event_type_is_understood(
    app: OrdersApp, app_url: str, whk_event_factory, whk_sign, event_type
):
    event = whk_event_factory(event_type, new={"id": 7})
    assert deliver(app_url, whk_sign(event, APP_SECRET)) == 204
    assert app.orders[7]["status"] == event["data"]["new"]["status"]


def test_a_wrong_signature_is_refused(app: OrdersApp, app_url: str, whk_event_factory, whk_sign):
    event = whk_event_factory("order.created", new={"id": 1})
    assert deliver(app_url, whk_sign(event, "whsec_" + "d3Jvbmcgd3Jvbmcgd3Jvbmcgd3Jvbmch")) == 401
    assert app.orders == {}


def test_a_stale_delivery_is_refused(app: OrdersApp, app_url: str, whk_event_factory, whk_sign):
    event = whk_event_factory("order.created", new={"id": 1})
    assert deliver(app_url, whk_sign(event, APP_SECRET, timestamp=int(time.time()) - 600)) == 401


def test_a_retried_delivery_is_processed_once(app: OrdersApp, app_url: str, whk_event_factory, whk_sign):
    first = whk_sign(
        whk_event_factory("order.created", new={"id": 5, "status": "new"}), APP_SECRET, msg_id="msg_5"
    )
    assert deliver(app_url, first) == 204
    # WHK retries with the same webhook-id (and a fresh timestamp): the app must not apply it twice
    changed = whk_sign(
        whk_event_factory("order.created", new={"id": 5, "status": "changed"}), APP_SECRET, msg_id="msg_5"
    )
    assert deliver(app_url, changed) == 200
    assert app.orders[5]["status"] == "new"


def test_the_partner_is_told_and_retried(
    app: OrdersApp, app_url: str, whk_receiver, whk_event_factory, whk_sign
):
    """whk_receiver stands in for the partner, failing twice first: the app must retry, signed."""
    app.partner = Partner(url=whk_receiver.url + "shipments", secret=whk_receiver.secret)
    whk_receiver.play([503, 503, 200])
    event = whk_event_factory("order.shipped", new={"id": 9})
    assert deliver(app_url, whk_sign(event, APP_SECRET, msg_id="msg_9")) == 204

    received = whk_receiver.wait_for_event("shipment.notified", where={"data.order_id": 9})
    assert received.path == "/shipments"
    got = whk_receiver.received
    assert [r.replied_status for r in got] == [503, 503, 200]
    got.assert_signed_by(whk_receiver.secret)
    got.assert_event("shipment.notified", count=3)


@pytest.mark.skipif(not os.environ.get("WHK_URL"), reason="set WHK_URL and WHK_API_KEY to run against a WHK")
def test_against_a_running_whk(whk_receiver):
    """With a WHK running (make up): point a webhook at the receiver and wait for a real delivery."""
    hook = whk_receiver.connect(
        os.environ["WHK_URL"],
        os.environ["WHK_API_KEY"],
        event_types=["system.*"],
        consumer_id=int(os.environ.get("WHK_CONSUMER_ID", "1")),
    )
    httpx.post(
        f"{os.environ['WHK_URL']}/api/whk/webhooks/{hook.id}/test",
        headers={"Authorization": f"Bearer {os.environ['WHK_API_KEY']}"},
        json={},
    )
    whk_receiver.wait_for(1, timeout=30).assert_signed_by(hook.secret)
