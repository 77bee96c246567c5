"""SLOs: the figures of whk.kpi_slo against a hand computation, and the multi-window burn-rate alerts the
API creates with an SLO, evaluated by the real worker."""

from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient
from standardwebhooks.webhooks import Webhook

from api.app import create_app
from tests.support.api_platform import admin_key, bearer, consumer_key
from tests.support.delivery import make_consumer
from tests.support.ops import alert_row, disable_builtins, ops_settings, worker
from tests.support.receiver import receiver, wait_until
from tests.support.resources import make_delivery, make_webhook

pytestmark = [pytest.mark.db]
__all__ = ["receiver"]

SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="
BASE = "/api/whk/monitoring"


def inject(conn, hook: int, ok: int, failed: int) -> None:  # type: ignore[no-untyped-def]
    """``ok`` successful attempts and ``failed`` failed ones (one dead delivery holds all the failures)."""
    for _ in range(ok):
        make_delivery(conn, hook, status="delivered", attempts=1)
    make_delivery(conn, hook, status="dead", attempts=failed)


async def test_slo_budget_figures_and_the_fast_burn_page(db_url, conn, receiver):
    disable_builtins(conn)
    c = make_consumer(conn)
    hook = make_webhook(conn, c)
    inject(conn, hook, ok=95, failed=5)  # a 5 % failure rate
    settings = ops_settings(db_url)
    admin = bearer(admin_key(conn))
    channels = [{"type": "webhook", "target": receiver.url("/page"), "secret": SECRET}]
    async with AsyncTestClient(app=create_app(settings)) as api:
        r = await api.post(
            f"{BASE}/slos",
            json={"name": "orders 99%", "objective": 0.99, "webhook_id": hook, "channels": channels},
            headers=admin,
        )
        assert r.status_code == 201, r.text
        at99 = r.json()
        r = await api.post(
            f"{BASE}/slos",
            json={"name": "orders 99.9%", "objective": 0.999, "webhook_id": hook, "channels": channels},
            headers=admin,
        )
        at999 = r.json()
        assert len(at99["alert_ids"]) == 2 and len(at999["alert_ids"]) == 2
        async with worker(settings):
            fast999 = at999["alert_ids"][0]
            assert await wait_until(lambda: alert_row(conn, fast999)["state"] == "firing", 30)
            assert await wait_until(lambda: len(receiver.to("/page")) >= 2, 20)
            slo = (await api.get(f"{BASE}/slos/{at99['slo_id']}", headers=admin)).json()
            fast99, slow99 = (alert_row(conn, a) for a in at99["alert_ids"])
        # Hand computation, 99 %: 100 attempts, 5 failed. Compliance 95 %; the budget allows
        # (1 - 0.99) x 100 = 1 failure; 5 spent, so 1 - 5/1 = -4 of it remains; every window sees the same
        # 5 % error ratio, a burn rate of 0.05 / 0.01 = 5: under both the page (14.4x) and the ticket (6x).
        assert slo["attempts"] == 100 and slo["failures"] == 5
        assert slo["compliance"] == pytest.approx(0.95)
        assert slo["error_budget"] == pytest.approx(1.0)
        assert slo["budget_remaining"] == pytest.approx(-4.0)
        for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
            assert slo[f"burn_rate_{w}"] == pytest.approx(5.0), w
        assert [p["attempts"] for p in slo["history"]] == [100]
        assert slo["history"][0]["compliance"] == pytest.approx(0.95)
        assert fast99["state"] == "ok" and slow99["state"] == "ok"
        assert fast99["last_value"] == pytest.approx(5.0)
        # 99.9 %: the same 5 % burns at 0.05 / 0.001 = 50x, over both windows of the page and the ticket.
        fired = (await api.get(f"{BASE}/alerts/{fast999}", headers=admin)).json()
        assert fired["state"] == "firing" and fired["current_value"] == pytest.approx(50.0)
        assert fired["severity"] == "critical"
        assert fired["condition"]["long_window_s"] == 3600 and fired["condition"]["short_window_s"] == 300
        events = [Webhook(SECRET).verify(r.body, r.headers) for r in receiver.to("/page")]
        assert {e["data"]["alert_id"] for e in events} == set(at999["alert_ids"])
        listed = (await api.get(f"{BASE}/slos", headers=admin)).json()["items"]
        assert [s["slo_id"] for s in listed] == [at99["slo_id"], at999["slo_id"]]
        other = make_consumer(conn, "globex")
        theirs = bearer(consumer_key(conn, other, ["*"]))
        assert (await api.get(f"{BASE}/slos", headers=theirs)).json()["items"] == []
        assert (await api.get(f"{BASE}/slos/{at99['slo_id']}", headers=theirs)).status_code == 404
