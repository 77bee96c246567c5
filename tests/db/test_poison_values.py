"""The poison value that killed the dispatcher (rate_limit_per_second = 5e-324: `value out of range:
underflow` in whk.claim_deliveries) cannot reach a row any more (CHECKs, tests/integration/resources/
test_setting_bounds.py), and the delivery SQL no longer fails on such a row should one predate the CHECKs:
rates are clamped before the bucket arithmetic, a quota above 2^31 is not cast to integer, the breaker's
doubling stops before it overflows, and the API's rate limit never divides by zero."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from tests.db.test_delivery_sql import URL, claim, record, route
from tests.support.delivery import emit, make_consumer, make_webhook, statuses
from tests.support.dispatch import fast_settings, running
from tests.support.receiver import receiver, wait_until

pytestmark = pytest.mark.db
__all__ = ["receiver"]  # the fixture, imported

TINY = "5e-324"


def _without_checks(conn: psycopg.Connection[Any], *constraints: str) -> None:
    """Drop CHECKs so a row can hold what a SQL-side write from before the bounds could hold."""
    for name in constraints:
        table = name.split("_rate")[0].split("_quota")[0].split("_value")[0]
        conn.execute(f"ALTER TABLE whk.{table} DROP CONSTRAINT {name}")


def test_the_poison_value_is_refused_in_sql(conn: psycopg.Connection[Any]):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, URL, ["*"])
    for statement, args in (
        ("UPDATE whk.whk_01_webhooks SET rate_limit_per_second = %s::numeric WHERE id = %s", (TINY, hook)),
        ("UPDATE whk.whk_04_assinantes SET rate_limit_per_second = %s::numeric WHERE id = %s", (TINY, c)),
        (
            "UPDATE whk.whk_05_configuracoes SET value = jsonb_build_object('per_second', %s::numeric)"
            " WHERE key = %s",
            (TINY, "rate_limit.webhook_default"),
        ),
    ):
        with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
            conn.execute(statement, args)


def test_rows_from_before_the_checks_do_not_stop_the_claim(conn: psycopg.Connection[Any]):
    _without_checks(
        conn,
        "whk_01_webhooks_rate_limit_per_second_check",
        "whk_04_assinantes_rate_limit_per_second_check",
        "whk_04_assinantes_quota_deliveries_per_day_check",
    )
    poisoned = make_consumer(conn, "poisoned")
    conn.execute(
        "UPDATE whk.whk_04_assinantes SET rate_limit_per_second = %s::numeric,"
        " quota_deliveries_per_day = 3000000000 WHERE id = %s",
        (TINY, poisoned),
    )
    bad = make_webhook(conn, poisoned, URL, ["*"])
    conn.execute(
        "UPDATE whk.whk_01_webhooks SET rate_limit_per_second = %s::numeric WHERE id = %s", (TINY, bad)
    )
    healthy = make_webhook(conn, make_consumer(conn, "healthy"), URL, ["*"])
    emit(conn, "p.e", count=5)
    route(conn)
    claimed = claim(conn)
    by_hook = {h: sum(1 for r in claimed if r[1] == h) for h in (bad, healthy)}
    # the poisoned webhook runs at the floor (0.001/s, a bucket of one), the other one at full speed
    assert by_hook == {bad: 1, healthy: 5}


def test_the_breaker_doubling_does_not_overflow(conn: psycopg.Connection[Any]):
    c = make_consumer(conn)
    hook = make_webhook(conn, c, URL, ["*"], breaker_config={"failure_threshold": 1, "open_s": 0.001})
    emit(conn, "b.e")
    route(conn)
    # a breaker whose probes have failed for weeks: 2^5001 overflows double precision
    conn.execute(
        "UPDATE whk.webhook_runtime SET breaker_state = 'half_open', failed_probes = 5000,"
        " probe_until = now() - interval '1 second' WHERE webhook_id = %s",
        (hook,),
    )
    (probe,) = claim(conn)
    now = datetime.now(UTC).isoformat()
    record(conn, [{"id": probe[0], "webhook_id": hook, "state": "pending", "next_attempt_at": now}])
    row = conn.execute(
        "SELECT breaker_state, failed_probes, probe_at - now() <= interval '600 seconds'"
        " FROM whk.webhook_runtime WHERE webhook_id = %s",
        (hook,),
    ).fetchone()
    assert row == ("open", 5001, True)  # capped by open_max_s (600 s by default)


def test_the_api_rate_limit_never_divides_by_zero(conn: psycopg.Connection[Any]):
    _without_checks(conn, "whk_05_configuracoes_value_bounds")
    conn.execute("ALTER TABLE whk.whk_05_configuracoes DISABLE TRIGGER whk_05_configuracoes_bounds")
    conn.execute("UPDATE whk.whk_05_configuracoes SET value = '0' WHERE key = 'rate_limit.api_per_minute'")
    row = conn.execute("SELECT allowed, limit_count FROM whk.api_rate_limit_hit('poison', NULL)").fetchone()
    assert row == (True, 1)
    conn.execute("UPDATE whk.whk_05_configuracoes SET value = '1e12' WHERE key = 'rate_limit.api_per_minute'")
    row = conn.execute("SELECT allowed, limit_count FROM whk.api_rate_limit_hit('huge', NULL)").fetchone()
    assert row == (True, 2147483647)


async def test_a_dispatcher_serves_everyone_next_to_a_poisoned_row(db_url, conn, receiver):
    """The reported fault end to end: the poisoned webhook's row used to kill the dispatcher on its first
    claim; now its deliveries trickle at the floor rate and every other webhook is served."""
    _without_checks(conn, "whk_01_webhooks_rate_limit_per_second_check")
    c = make_consumer(conn)
    bad = make_webhook(conn, c, receiver.url("/poisoned"), ["*"])
    conn.execute(
        "UPDATE whk.whk_01_webhooks SET rate_limit_per_second = %s::numeric WHERE id = %s", (TINY, bad)
    )
    good = make_webhook(conn, make_consumer(conn, "other"), receiver.url("/healthy"), ["*"])
    emit(conn, "p.e", count=20)
    async with running(fast_settings(db_url)) as task:
        assert await wait_until(lambda: statuses(conn, good) == {"delivered": 20}, 15)
        assert await wait_until(lambda: statuses(conn, bad).get("delivered") == 1, 10)
        assert not task.done()
    assert len(receiver.to("/poisoned")) == 1
