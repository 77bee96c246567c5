"""Delayed delivery, completed (issue 20) through the API: the webhook's supersede_by_key and urgent settings,
the consumer's quiet hours (validated, the field named), superseded deliveries listed and filtered."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from tests.support.delivery import emit, route
from tests.support.resources import World

pytestmark = pytest.mark.db

HOOKS = "/api/whk/webhooks"
CONSUMERS = "/api/whk/consumers"
DELAYED = {
    "name": "prices",
    "url": "http://127.0.0.1:9/h",
    "event_types": ["price.changed"],
    "delivery_mode": "delayed",
    "delay_seconds": 300,
}
WEEKNIGHTS = {
    "time_zone": "Europe/Lisbon",
    "windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "22:00", "end": "07:00"}],
}


def _problem(r: Any, status: int, pointer: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert pointer in [e["pointer"] for e in r.json()["errors"]], r.text


async def test_superseded_deliveries_are_listed_filtered_and_name_their_replacement(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    r = await client.post(HOOKS, json={**DELAYED, "supersede_by_key": True}, headers=world.a.headers)
    assert r.status_code == 201, r.text
    hook = r.json()["webhook"]
    assert hook["supersede_by_key"] is True and hook["urgent"] is False
    for price in range(10):
        emit(conn, "price.changed", {"price": price}, key="sku-1")
        route(conn)

    r = await client.get(
        "/api/whk/deliveries", params={"status": "superseded", "limit": 100}, headers=world.a.headers
    )
    assert r.status_code == 200, r.text
    superseded = r.json()["items"]
    assert len(superseded) == 9
    r = await client.get("/api/whk/deliveries", params={"status": "pending"}, headers=world.a.headers)
    [kept] = r.json()["items"]
    chain = {d["id"]: d["superseded_by"] for d in superseded}
    for start in chain:  # every superseded delivery leads to the one that will be sent
        at = start
        while at in chain:
            at = chain[at]
        assert at == kept["id"]
    r = await client.get(f"/api/whk/deliveries/{superseded[0]['id']}", headers=world.a.headers)
    assert r.json()["status"] == "superseded" and r.json()["superseded_by"] is not None
    # Final: a retry is refused and points at the replacement.
    r = await client.post(f"/api/whk/deliveries/{superseded[0]['id']}/retry", headers=world.a.headers)
    assert r.status_code == 409, r.text
    assert f"superseded by delivery {superseded[0]['superseded_by']}" in r.json()["detail"]


async def test_supersede_needs_delayed_mode(client: AsyncTestClient[Any], world: World):
    r = await client.post(
        HOOKS,
        json={**DELAYED, "delivery_mode": "immediate", "supersede_by_key": True},
        headers=world.a.headers,
    )
    _problem(r, 422, "/supersede_by_key")
    r = await client.post(HOOKS, json={**DELAYED, "supersede_by_key": True}, headers=world.a.headers)
    hook_id = r.json()["webhook"]["id"]
    r = await client.put(f"{HOOKS}/{hook_id}", json={"delivery_mode": "ordered"}, headers=world.a.headers)
    _problem(r, 422, "/supersede_by_key")
    r = await client.put(
        f"{HOOKS}/{hook_id}",
        json={"delivery_mode": "ordered", "supersede_by_key": False, "urgent": True},
        headers=world.a.headers,
    )
    assert r.status_code == 200, r.text
    assert (r.json()["delivery_mode"], r.json()["supersede_by_key"], r.json()["urgent"]) == (
        "ordered",
        False,
        True,
    )


async def test_quiet_hours_are_set_by_the_consumer_and_cleared(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    url = f"{CONSUMERS}/{world.a.consumer_id}"
    r = await client.put(url, json={"quiet_hours": WEEKNIGHTS}, headers=world.a.headers)  # self-service
    assert r.status_code == 200, r.text
    assert r.json()["quiet_hours"] == WEEKNIGHTS
    stored = conn.execute(
        "SELECT quiet_hours FROM whk.whk_04_assinantes WHERE id = %s", [world.a.consumer_id]
    ).fetchone()
    assert stored == (WEEKNIGHTS,)
    r = await client.put(url, json={"quiet_hours": None}, headers=world.a.headers)
    assert r.status_code == 200 and r.json()["quiet_hours"] is None
    r = await client.post(
        CONSUMERS, json={"name": "night-owl", "quiet_hours": WEEKNIGHTS}, headers=world.admin
    )
    assert r.status_code == 201 and r.json()["quiet_hours"] == WEEKNIGHTS


@pytest.mark.parametrize(
    ("quiet", "status", "pointer"),
    [
        ({**WEEKNIGHTS, "time_zone": "Mars/Olympus_Mons"}, 422, "/quiet_hours/time_zone"),
        ({**WEEKNIGHTS, "time_zone": "CEST"}, 422, "/quiet_hours/time_zone"),
        (
            {**WEEKNIGHTS, "windows": [{"days": ["mon"], "start": "22:00", "end": "22:00"}]},
            422,
            "/quiet_hours/windows/0/end",
        ),
        (
            {**WEEKNIGHTS, "windows": [{"days": ["mon", "mon"], "start": "22:00", "end": "07:00"}]},
            422,
            "/quiet_hours/windows/0/days",
        ),
        (
            {**WEEKNIGHTS, "windows": [{"days": ["mon"], "start": "25:00", "end": "07:00"}]},
            400,
            "/quiet_hours/windows/0/start",
        ),
        ({**WEEKNIGHTS, "windows": []}, 400, "/quiet_hours/windows"),
        ({**WEEKNIGHTS, "windows": [{"days": ["someday"], "start": "22:00", "end": "07:00"}]}, 400, ""),
    ],
)
async def test_bad_quiet_hours_are_refused_naming_the_field(
    client: AsyncTestClient[Any], world: World, quiet: dict[str, Any], status: int, pointer: str
):
    r = await client.put(
        f"{CONSUMERS}/{world.a.consumer_id}", json={"quiet_hours": quiet}, headers=world.a.headers
    )
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    pointers = [e["pointer"] for e in r.json()["errors"]]
    assert any(p.startswith(pointer or "/quiet_hours/windows/0/days") for p in pointers), r.text
