"""Payload versions end to end: one commit, the dispatcher, a real receiver, each subscriber its own major.

The dispatcher engine runs in-process against real PostgreSQL and posts to a real HTTP receiver on
127.0.0.1; signatures are verified with the `standardwebhooks` package. A transform that fails for one
event parks that delivery only: the others arrive.
"""

from __future__ import annotations

import json

import pytest
from standardwebhooks.webhooks import Webhook

from tests.support.delivery import TEST_SECRET, make_consumer, make_webhook, statuses
from tests.support.dispatch import fast_settings, running
from tests.support.receiver import receiver, wait_until

pytestmark = [pytest.mark.db]
__all__ = ["receiver"]  # the fixture, imported

SETUP = """
CREATE SCHEMA erp_e2e;
GRANT USAGE ON SCHEMA erp_e2e TO whk_dispatcher;
CREATE FUNCTION erp_e2e.total_v2_to_v1(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
    RETURN jsonb_build_object('total', (data ->> 'total_cents')::int / (data ->> 'divisor')::int);
SELECT whk.register_event_type('e2e.invoice', '{"type": "object", "required": ["total"]}');
SELECT whk.register_event_transform('e2e.invoice', 2, 1, 'erp_e2e.total_v2_to_v1');
SELECT whk.register_event_type('e2e.invoice', '{"type": "object", "required": ["total_cents"]}',
                               new_major => true);
"""


async def test_v1_and_v2_receivers_get_their_shape_signed_and_a_failing_transform_parks_one(
    db_url, conn, receiver
):
    conn.execute(SETUP)
    c = make_consumer(conn)
    v1 = make_webhook(conn, c, receiver.url("/v1"), ["e2e.*"], payload_version=1)
    v2 = make_webhook(conn, c, receiver.url("/v2"), ["e2e.invoice"], payload_version=2)
    with conn.transaction():  # one commit: two events
        conn.execute("SELECT whk.emit('e2e.invoice', '{\"total_cents\": 1200, \"divisor\": 100}')")
        conn.execute("SELECT whk.emit('e2e.invoice', '{\"total_cents\": 5, \"divisor\": 0}')")
    async with running(fast_settings(db_url)):
        assert await wait_until(lambda: statuses(conn, v2) == {"delivered": 2}, 15)
        assert await wait_until(lambda: statuses(conn, v1) == {"delivered": 1, "parked": 1}, 15)

    (got1,) = receiver.to("/v1")
    body1 = Webhook(TEST_SECRET).verify(got1.body, got1.headers)
    assert body1["type"] == "e2e.invoice"
    assert body1["version"] == 1
    assert body1["data"] == {"total": 12}
    v2_bodies = [Webhook(TEST_SECRET).verify(r.body, r.headers) for r in receiver.to("/v2")]
    assert sorted(json.dumps(b["data"], sort_keys=True) for b in v2_bodies) == [
        '{"divisor": 0, "total_cents": 5}',
        '{"divisor": 100, "total_cents": 1200}',
    ]
    assert {b["version"] for b in v2_bodies} == {2}
    # Same event, same webhook-id, for both subscribers.
    assert got1.headers["webhook-id"] in {r.headers["webhook-id"] for r in receiver.to("/v2")}
    row = conn.execute(
        "SELECT render_problem FROM whk.whk_03_entregas WHERE webhook_id = %s AND status = 'parked'", [v1]
    ).fetchone()
    assert row is not None and "division by zero" in row[0]
