"""Global settings (whk_05_configuracoes) are the one source of what they configure: changing the seeded
row changes what the dispatcher and the SQL do, with nothing else edited."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from tests.support.delivery import emit, make_consumer, make_webhook, route, statuses
from tests.support.dispatch import compress_schedule, fast_settings, running
from tests.support.receiver import Reply, receiver, wait_until

pytestmark = [pytest.mark.db]
__all__ = ["receiver"]  # the fixture, imported


def attempts(conn: psycopg.Connection[Any], hook: int) -> list[int]:
    rows = conn.execute(
        "SELECT attempts FROM whk.whk_03_entregas WHERE webhook_id = %s AND status = 'dead' ORDER BY id",
        [hook],
    ).fetchall()
    return [r[0] for r in rows]


async def test_the_seeded_retry_schedule_drives_the_dispatcher(db_url, conn, receiver):
    receiver.on("/down", default=Reply(status=500))
    c = make_consumer(conn)
    hook = make_webhook(conn, c, receiver.url("/down"), ["*"], breaker_config={"failure_threshold": 100})
    compress_schedule(conn, [0.05])
    emit(conn, "r.one")
    async with running(fast_settings(db_url)):
        assert await wait_until(lambda: statuses(conn, hook) == {"dead": 1}, 15)
    assert attempts(conn, hook) == [2]  # the first try + one step of the setting
    compress_schedule(conn, [0.05, 0.05, 0.05])
    emit(conn, "r.two")
    async with running(fast_settings(db_url)):
        assert await wait_until(lambda: statuses(conn, hook) == {"dead": 2}, 15)
    assert attempts(conn, hook) == [2, 4]
    assert len(receiver.to("/down")) == 6
    # No setting at all: no schedule, as whk.expire_acks sees it (no schedule of the dispatcher's own).
    conn.execute("DELETE FROM whk.whk_05_configuracoes WHERE key = 'retry.policy'")
    emit(conn, "r.three")
    async with running(fast_settings(db_url)):
        assert await wait_until(lambda: statuses(conn, hook) == {"dead": 3}, 15)
    assert attempts(conn, hook) == [2, 4, 1]


@pytest.mark.parametrize(("schedule", "state"), [([1, 2], "dead"), ([1, 2, 3], "pending")])
def test_the_seeded_retry_schedule_drives_expire_acks(conn, schedule, state):
    """A delivery's third attempt went unconfirmed: with two steps in the setting it was the last one."""
    c = make_consumer(conn)
    hook = make_webhook(conn, c, "http://127.0.0.1:9/hook", ["*"], require_ack=True)
    compress_schedule(conn, schedule)
    emit(conn, "a.e")
    route(conn)
    conn.execute(
        "UPDATE whk.delivery_queue SET status = 'awaiting_ack', attempts = 3, "
        "ack_deadline = now() - interval '1 s' WHERE webhook_id = %s",
        [hook],
    )
    assert conn.execute("SELECT whk.expire_acks()").fetchone() == (1,)
    assert statuses(conn, hook) == {state: 1}


def test_a_webhook_override_replaces_the_setting_member_by_member(conn):
    compress_schedule(conn, [1, 2], jitter=0.3)
    got = conn.execute(
        "SELECT whk.effective_retry_policy(NULL), whk.effective_retry_policy(%s::jsonb)",
        [json.dumps({"schedule_s": [9]})],
    ).fetchone()
    assert got is not None
    assert got[0]["schedule_s"] == [1, 2] and got[0]["jitter"] == 0.3
    assert got[1]["schedule_s"] == [9] and got[1]["jitter"] == 0.3


async def test_response_body_max_bytes_caps_the_stored_response(db_url, conn, receiver):
    receiver.on("/big", default=Reply(status=200, body=b"x" * 5000))
    conn.execute(
        "UPDATE whk.whk_05_configuracoes SET value = '100' WHERE key = 'delivery.response_body_max_bytes'"
    )
    c = make_consumer(conn)
    hook = make_webhook(conn, c, receiver.url("/big"), ["*"])
    emit(conn, "b.ig")
    async with running(fast_settings(db_url)):
        assert await wait_until(lambda: statuses(conn, hook) == {"delivered": 1}, 15)
    row = conn.execute(
        "SELECT length(response_body), response_truncated FROM whk.whk_03_entregas_tentativas "
        "WHERE webhook_id = %s",
        [hook],
    ).fetchone()
    assert row == (100, True)
