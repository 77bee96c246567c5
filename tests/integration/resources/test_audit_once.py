"""One audit row per change, with the best actor: a change made through the API is audited by the API
(its principal), not a second time by the SQL audit trigger; the same change in SQL is audited by the
trigger with the database role. The API's connections carry the audit marker only as whk_app."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from tests.support.resources import World

pytestmark = pytest.mark.db


def trail(conn: psycopg.Connection[Any], target_type: str, target_id: int) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT action, actor FROM whk.audit_log WHERE target_type = %s AND target_id = %s ORDER BY id",
        [target_type, str(target_id)],
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


async def test_api_changes_are_audited_once_by_the_api_and_sql_changes_by_the_trigger(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any]
):
    r = await client.post(
        "/api/whk/webhooks",
        json={
            "consumer_id": world.a.consumer_id,
            "name": "h",
            "url": "https://example.com/h",
            "event_types": ["order.*"],
        },
        headers=world.admin,
    )
    assert r.status_code == 201, r.text
    hook = r.json()["webhook"]["id"]
    r = await client.put(f"/api/whk/webhooks/{hook}", json={"max_in_flight": 3}, headers=world.admin)
    assert r.status_code == 200, r.text
    r = await client.post("/api/whk/security/rotate-key", json={"webhook_id": hook}, headers=world.admin)
    assert r.status_code == 200, r.text
    api_actor = conn.execute(
        "SELECT actor FROM whk.audit_log WHERE action = 'webhook.create' AND target_id = %s", [str(hook)]
    ).fetchone()
    assert api_actor is not None and not api_actor[0].startswith("sql:")
    assert trail(conn, "webhook", hook) == [
        ("webhook.create", api_actor[0]),
        ("webhook.update", api_actor[0]),
        ("webhook.secret_rotate", api_actor[0]),
    ]
    conn.execute("UPDATE whk.whk_01_webhooks SET max_in_flight = 5 WHERE id = %s", [hook])
    assert trail(conn, "webhook", hook)[-1] == ("webhook.update", "sql:postgres")
    assert len(trail(conn, "webhook", hook)) == 4
