"""The dashboard in a real browser: Playwright for Python driving Debian's chromium (`make browser`).

Real components end to end: the API served by uvicorn, a dispatcher delivering to a real receiver on
127.0.0.1, PostgreSQL. Each test saves screenshots of the pages it visits: into $DASHBOARD_SCREENSHOTS
when set (``DASHBOARD_SCREENSHOTS=docs/dashboard make test`` refreshes the ones in the docs), else into
the test's tmp directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from api.dashboard.web import ms, num, pct
from ops.alerting.evaluate import Evaluator
from tests.support.api_platform import admin_key, consumer_key, real_server
from tests.support.delivery import emit, make_consumer, make_webhook
from tests.support.dispatch import compress_schedule, fast_settings, running
from tests.support.ops import alert_row, disable_builtins, ops_settings, rule, worker
from tests.support.receiver import Receiver, Reply, receiver, wait_until
from tests.support.resources import make_delivery

pytestmark = [pytest.mark.db, pytest.mark.e2e, pytest.mark.slow]
__all__ = ["receiver"]  # the fixture, imported for the tests below

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    target = Path(os.environ.get("DASHBOARD_SCREENSHOTS") or tmp_path / "screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (installs Debian's chromium)")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            await b.close()


async def new_context(browser: Browser, viewport: dict[str, int] = DESKTOP) -> BrowserContext:
    ctx = await browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    ctx.set_default_timeout(15_000)
    return ctx


async def sign_in(page: Page, base: str, key: str, path: str = "/dashboard/overview") -> None:
    await page.goto(base + path)
    assert "/dashboard/login" in page.url
    await page.fill("#api_key", key)
    await page.click("button[type=submit]")
    await page.wait_for_url(re.compile(re.escape(base + path)))


async def text(page: Page, testid: str) -> str:
    return (await page.get_by_test_id(testid).first.inner_text()).strip()


def settle(conn: psycopg.Connection[Any], expected: dict[str, int]) -> bool:
    rows = conn.execute("SELECT status, count(*) FROM whk.whk_03_entregas GROUP BY status").fetchall()
    found = {r[0]: int(r[1]) for r in rows}
    return all(found.get(k, 0) == v for k, v in expected.items())


async def test_overview_numbers_equal_sql_after_known_deliveries(
    db_url: str, conn: psycopg.Connection[Any], receiver: Receiver, browser: Browser, shots: Path
) -> None:
    settings = fast_settings(db_url)
    compress_schedule(conn, [0.1])  # one retry, then dead
    receiver.on("/fail", default=Reply(status=500, body=b"boom"))
    acme = make_consumer(conn, "acme")
    make_webhook(conn, acme, receiver.url("/ok"), ["order.*"], name="orders-ok")
    make_webhook(
        conn,
        acme,
        receiver.url("/fail"),
        ["order.*"],
        name="orders-broken",
        breaker_config={"failure_threshold": 1000},  # every attempt reaches the receiver
    )
    emit(conn, "order.created", {"n": 1}, count=6)
    key = admin_key(conn)
    async with running(settings):
        assert await wait_until(lambda: settle(conn, {"delivered": 6, "dead": 6}), 60)
    # What the overview must show for its 1 h window, computed here from the tables themselves.
    attempts, ok = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE outcome IN ('delivered', 'awaiting_ack')) "
        "FROM whk.whk_03_entregas_tentativas WHERE started_at >= now() - interval '1 hour'"
    ).fetchone()
    p50, p95, p99 = conn.execute(
        "SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP "
        "(ORDER BY extract(epoch FROM delivered_at - event_created_at) * 1000) "
        "FROM whk.whk_03_entregas WHERE status = 'delivered'"
    ).fetchone()[0]
    assert (attempts, ok) == (18, 6)  # 6 delivered + 6 x 2 failed attempts

    async with real_server(settings) as base:
        ctx = await new_context(browser)
        page = await ctx.new_page()
        await sign_in(page, base, key)
        assert await text(page, "attempts") == num(attempts)
        assert await text(page, "attempts-ok") == num(ok)
        assert await text(page, "success-rate") == pct(ok / attempts)
        assert await text(page, "p50") == ms(p50)
        assert await text(page, "p95") == ms(p95)
        assert await text(page, "p99") == ms(p99)
        assert await text(page, "dead-24h") == "6"
        assert await text(page, "backlog") == "0"
        worst = await page.get_by_test_id("worst").inner_text()
        assert "orders-broken" in worst and "orders-ok" not in worst
        # the chart is drawn by the vendored uPlot (60 one-minute buckets for the 1 h window)
        await page.wait_for_selector("[data-chart][data-drawn]")
        await page.screenshot(path=str(shots / "overview.png"))

        # live refresh: a new delivery shows up without reloading the page
        before = await text(page, "generated")
        async with running(settings):
            emit(conn, "order.created", {"n": 2}, count=1)
            assert await wait_until(lambda: settle(conn, {"delivered": 7}), 30)
        # the page's CSP forbids eval, so wait with a locator rather than wait_for_function
        await expect(page.get_by_test_id("attempts-ok")).to_have_text("7", timeout=20_000)
        assert await text(page, "generated") != before

        # the KPI roll-up the webhook list reads, as the operations worker refreshes it before evaluating
        conn.execute("SELECT whk.kpi_rollup(3600)")
        for name in ("webhooks", "deliveries", "events", "usage"):  # alerts: its own test below
            await page.goto(f"{base}/dashboard/{name}")
            assert page.url.endswith(f"/dashboard/{name}")
            await page.screenshot(path=str(shots / f"{name}.png"))
        await page.goto(f"{base}/dashboard/webhooks")
        # the list's success rate is the KPI view's (what an alert on failure_rate reads)
        kpi = conn.execute(
            "SELECT k.failure_rate FROM whk.kpi_webhook_window k JOIN whk.whk_01_webhooks w "
            "ON w.id = k.webhook_id WHERE w.name = 'orders-broken' AND k.window_s = 86400"
        ).fetchone()
        assert kpi is not None
        broken = page.locator("[data-testid=webhooks] tr", has_text="orders-broken")
        assert (await broken.get_by_test_id("success").inner_text()).startswith(pct(1 - kpi[0]))
        await page.click("text=orders-broken")
        await page.wait_for_selector("[data-chart][data-drawn]")
        await page.screenshot(path=str(shots / "webhook.png"))
        await page.goto(f"{base}/dashboard/deliveries?status=dead")
        await page.click("[data-testid=deliveries] tbody tr:first-child a")
        assert await page.get_by_test_id("attempt").count() == 2
        await page.screenshot(path=str(shots / "delivery.png"))

        # the events page's live tail shows a new event without a reload
        await page.goto(f"{base}/dashboard/events")
        emit(conn, "order.cancelled", {"n": 3}, count=1)
        await expect(page.get_by_test_id("tail")).to_contain_text("order.cancelled", timeout=20_000)
        await ctx.close()

        phone = await new_context(browser, PHONE)
        page = await phone.new_page()
        await sign_in(page, base, key)
        await page.screenshot(path=str(shots / "overview-phone.png"))
        for name in ("overview", "webhooks", "deliveries", "dead", "events", "usage", "alerts"):
            await page.goto(f"{base}/dashboard/{name}")
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"/dashboard/{name} scrolls sideways on a phone ({width} px)"
        await phone.close()


async def test_retry_a_dead_letter_from_its_page_reaches_the_receiver(
    db_url: str, conn: psycopg.Connection[Any], receiver: Receiver, browser: Browser, shots: Path
) -> None:
    settings = fast_settings(db_url)
    compress_schedule(conn, [])  # no retries: the first failure is a dead letter
    receiver.on("/flaky", Reply(status=500), Reply(status=500), default=Reply(status=200))
    acme = make_consumer(conn, "acme")
    hook = make_webhook(conn, acme, receiver.url("/flaky"), ["order.*"], name="flaky")
    emit(conn, "order.created", {"n": 1}, count=2)
    key = admin_key(conn)
    async with running(settings):
        assert await wait_until(lambda: settle(conn, {"dead": 2}), 30)
        async with real_server(settings) as base:
            ctx = await new_context(browser)
            page = await ctx.new_page()
            await sign_in(page, base, key, "/dashboard/dead")
            groups = await page.get_by_test_id("dead-groups").inner_text()
            assert "flaky" in groups
            await page.screenshot(path=str(shots / "dead.png"))
            # retry one: the newest dead letter of the group
            await page.click("text=Retry latest")
            await page.wait_for_selector("[data-testid=notice]")
            assert await wait_until(lambda: len(receiver.to("/flaky")) == 3, 30)
            assert await wait_until(lambda: settle(conn, {"dead": 1, "delivered": 1}), 30)
            # retry all: the count first, then the confirmation, then the bulk retry job's progress page,
            # which refreshes itself until the job worker has done it
            await page.goto(f"{base}/dashboard/dead")
            await page.click("text=/Retry all/")
            assert await text(page, "count") == "1"
            await page.screenshot(path=str(shots / "dead-confirm.png"))
            page.once("dialog", lambda d: d.accept())
            await page.click("button.danger")
            await page.wait_for_selector("[data-testid=bulk-retry]")
            assert re.search(r"/dashboard/bulk-retries/\d+$", page.url)
            async with worker(ops_settings(db_url)):
                await expect(page.get_by_test_id("bulk-state")).to_have_text("done", timeout=30_000)
            assert await text(page, "bulk-requeued") == "1"
            await page.screenshot(path=str(shots / "bulk-retry.png"))
            assert await wait_until(lambda: settle(conn, {"dead": 0, "delivered": 2}), 30)
            await ctx.close()
    audited = conn.execute(
        "SELECT action, count(*) FROM whk.audit_log "
        "WHERE action LIKE 'delivery.%%' OR action LIKE 'bulk_retry.%%' GROUP BY action"
    ).fetchall()
    assert dict(audited) == {"delivery.retry": 1, "bulk_retry.start": 1}
    assert (
        conn.execute("SELECT count(*) FROM whk.audit_log WHERE action = 'dashboard.login'").fetchone()[0] == 1
    )
    assert hook  # the webhook the dead letters belong to


async def test_a_consumer_cannot_see_another_tenant_and_posts_need_the_csrf_token(
    db_url: str, conn: psycopg.Connection[Any], browser: Browser, shots: Path
) -> None:
    settings = fast_settings(db_url)
    a = make_consumer(conn, "tenant-a")
    b = make_consumer(conn, "tenant-b")
    hook_a = make_webhook(conn, a, "http://127.0.0.1:9/a", name="hook-of-a")
    hook_b = make_webhook(conn, b, "http://127.0.0.1:9/b", name="hook-of-b")
    key_a = consumer_key(conn, a)
    async with real_server(settings) as base:
        ctx = await new_context(browser)
        page = await ctx.new_page()
        await sign_in(page, base, key_a, "/dashboard/webhooks")
        listed = await page.get_by_test_id("webhooks").inner_text()
        assert "hook-of-a" in listed and "hook-of-b" not in listed
        response = await page.goto(f"{base}/dashboard/webhooks/{hook_b}")
        assert response is not None and response.status == 404
        assert f"webhook {hook_b} not found" in await page.inner_text("main")
        await page.screenshot(path=str(shots / "not-found.png"))
        missing = await page.goto(f"{base}/dashboard/webhooks/{hook_b + 1000}")
        assert missing is not None and missing.status == 404  # the same page as a missing id

        # A POST without the CSRF token is refused; the same POST with it pauses the webhook.
        refused = await ctx.request.post(
            f"{base}/dashboard/webhooks/{hook_a}/pause", form={}, max_redirects=0
        )
        assert refused.status == 403
        wrong = await ctx.request.post(
            f"{base}/dashboard/webhooks/{hook_a}/pause", form={"csrf": "x" * 43}, max_redirects=0
        )
        assert wrong.status == 403
        status = conn.execute("SELECT status FROM whk.whk_01_webhooks WHERE id = %s", [hook_a]).fetchone()
        assert status == ("active",)
        await page.goto(f"{base}/dashboard/webhooks/{hook_a}")
        await page.click("text=Pause")
        await page.wait_for_selector("text=Done: pause")
        assert await text(page, "status") == "paused"
        # another tenant's webhook cannot be paused either, even with a valid token
        token = await page.get_attribute("input[name=csrf]", "value")
        other = await ctx.request.post(
            f"{base}/dashboard/webhooks/{hook_b}/pause", form={"csrf": token or ""}, max_redirects=0
        )
        assert other.status == 404
        await ctx.close()
    rows = conn.execute(
        "SELECT target_id, before->>'status', after->>'status' FROM whk.audit_log "
        "WHERE action = 'webhook.update'"
    ).fetchall()
    assert rows == [(str(hook_a), "active", "paused")]


async def test_acknowledge_and_silence_a_firing_alert_from_the_alerts_page(
    db_url: str,
    conn: psycopg.Connection[Any],
    aconn: psycopg.AsyncConnection[Any],
    browser: Browser,
    shots: Path,
) -> None:
    settings = fast_settings(db_url)
    disable_builtins(conn)
    acme = make_consumer(conn, "acme")
    hook = make_webhook(conn, acme, "http://127.0.0.1:9/orders", ["order.*"], name="orders")
    # 6 failed attempts (3 dead deliveries of 2 attempts) and 1 delivered: a failure rate of 6/7.
    for _ in range(3):
        make_delivery(conn, hook, status="dead", attempts=2)
    make_delivery(conn, hook, status="delivered", attempts=1)
    alert = rule(
        conn,
        {"metric": "failure_rate", "operator": ">", "threshold": 0.5, "window_s": 300, "webhook_id": hook},
        name="orders failing",
    )
    conn.execute(
        "INSERT INTO whk.slos (consumer_id, webhook_id, name, objective) VALUES (%s, %s, 'orders 99', 0.99)",
        [acme, hook],
    )
    # One evaluation by the operations worker's own code: roll-up, rules, state machine.
    await Evaluator(lease_s=60, rollup_horizon_s=600).evaluate(aconn)
    assert alert_row(conn, alert)["state"] == "firing"
    slo = conn.execute("SELECT compliance, budget_remaining, burn_rate_1h FROM whk.kpi_slo").fetchone()
    assert slo is not None and slo[0] == pytest.approx(1 / 7)
    key = admin_key(conn)

    async with real_server(settings) as base:
        ctx = await new_context(browser)
        page = await ctx.new_page()
        await sign_in(page, base, key, "/dashboard/alerts")
        row = page.locator(f"tr[data-alert='{alert}']")
        await expect(row.get_by_test_id("alert-state")).to_have_text("firing")
        assert await row.get_by_test_id("alert-ack").count() == 0
        slos = page.get_by_test_id("slos")
        assert await slos.get_by_test_id("slo-compliance").inner_text() == pct(slo[0])
        assert await slos.get_by_test_id("slo-budget").inner_text() == pct(slo[1])
        assert await slos.get_by_test_id("slo-burn-1h").inner_text() == num(slo[2])
        history = page.get_by_test_id("alert-history")
        assert "orders failing" in await history.inner_text()

        # A POST without the session's CSRF token changes nothing.
        refused = await ctx.request.post(
            f"{base}/dashboard/alerts/{alert}/acknowledge", form={}, max_redirects=0
        )
        assert refused.status == 403
        assert alert_row(conn, alert)["acknowledged_at"] is None

        await row.get_by_role("button", name="Acknowledge").click()
        await expect(page.get_by_test_id("notice")).to_have_text("Done: acknowledge.")
        row = page.locator(f"tr[data-alert='{alert}']")
        await expect(row.get_by_test_id("alert-ack")).to_contain_text("acknowledged by")
        assert await row.get_by_role("button", name="Acknowledge").count() == 0
        acked = conn.execute(
            "SELECT history_id, acknowledged_by FROM whk.whk_06_alertas WHERE id = %s", [alert]
        ).fetchone()
        assert acked is not None and acked[1]
        # the history shows the activation as acknowledged, by whom
        await expect(page.locator(f"tr[data-activation='{acked[0]}']")).to_contain_text(acked[1])
        # acknowledged twice: the API's 409, as a page
        token = await page.get_attribute("input[name=csrf]", "value")
        again = await ctx.request.post(
            f"{base}/dashboard/alerts/{alert}/acknowledge", form={"csrf": token or ""}, max_redirects=0
        )
        assert again.status == 409

        await row.locator("select[name=duration_s]").select_option("3600")
        await row.get_by_role("button", name="Silence").click()
        await expect(page.get_by_test_id("notice")).to_have_text("Done: silence.")
        await expect(
            page.locator(f"tr[data-alert='{alert}']").get_by_test_id("alert-silenced")
        ).to_be_visible()
        await page.screenshot(path=str(shots / "alerts.png"), full_page=True)
        await ctx.close()

    state = conn.execute(
        "SELECT a.state, a.acknowledged_by, a.silenced_until > now() + interval '59 minutes', "
        "h.acknowledged_by FROM whk.whk_06_alertas a "
        "JOIN whk.whk_06_alertas_historico h ON h.id = a.history_id "
        "WHERE a.id = %s",
        [alert],
    ).fetchone()
    assert state is not None
    assert state[0] == "firing" and state[2] is True
    assert state[1] is not None and state[1] == state[3]
    # The same audit rows as POST /monitoring/alerts/{id}/acknowledge and /silence write.
    audited = conn.execute(
        "SELECT action, target_type, target_id, after FROM whk.audit_log "
        "WHERE action LIKE 'alert.%%' ORDER BY id"
    ).fetchall()
    assert audited == [
        ("alert.acknowledge", "alert", str(alert), None),
        ("alert.silence", "alert", str(alert), {"duration_s": 3600}),
    ]
