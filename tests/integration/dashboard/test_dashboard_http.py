"""The dashboard over HTTP (no browser): sign-in, cookie flags, CSRF, tenancy, audit, every page renders."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.dashboard.web import age, ms, num, pct
from tests.support.api_platform import admin_key, client, consumer_key, settings_for
from tests.support.ops import ops_settings, worker
from tests.support.receiver import Receiver, receiver, wait_until
from tests.support.resources import make_consumer, make_delivery, make_webhook

pytestmark = [pytest.mark.db]
__all__ = ["receiver"]  # the fixture

PAGES = ("overview", "webhooks", "deliveries", "dead", "events", "usage", "alerts")


async def sign_in(c: AsyncTestClient[Litestar], key: str) -> None:
    page = await c.get("/dashboard/login")
    assert page.status_code == 200
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token is not None
    r = await c.post(
        "/dashboard/login",
        data={"api_key": key, "login_token": token.group(1), "next": "/dashboard/overview"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/dashboard/overview"


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


@pytest.fixture
def world(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    a = make_consumer(conn, "tenant-a")
    b = make_consumer(conn, "tenant-b")
    hook_a = make_webhook(conn, a, name="hook-a")
    hook_b = make_webhook(conn, b, name="hook-b")
    dead_b = make_delivery(conn, hook_b, status="dead", attempts=3)
    return {
        "admin": admin_key(conn),
        "a": consumer_key(conn, a),
        "hook_a": hook_a,
        "hook_b": hook_b,
        "dead_b": dead_b,
    }


async def test_pages_need_a_session_and_sign_in_sets_a_strict_httponly_cookie(
    db_url: str, world: dict[str, Any]
) -> None:
    async with client(settings_for(db_url)) as c:
        r = await c.get("/dashboard/overview", follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"].startswith("/dashboard/login?next=")
        await sign_in(c, world["admin"])
        cookie = next(v for k, v in c.cookies.items() if k == "whk_session")
        assert cookie
        for page in PAGES:
            r = await c.get(f"/dashboard/{page}")
            assert r.status_code == 200, (page, r.text[:500])
            assert "text/html" in r.headers["content-type"]
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


async def test_set_cookie_flags(db_url: str, world: dict[str, Any]) -> None:
    async with client(settings_for(db_url)) as c:
        page = await c.get("/dashboard/login")
        token = re.search(r'name="login_token" value="([^"]+)"', page.text)
        assert token is not None
        r = await c.post(
            "/dashboard/login",
            data={"api_key": world["admin"], "login_token": token.group(1)},
            follow_redirects=False,
        )
        set_cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and "whk_session=" in v)
        flags = {p.strip().split("=")[0].lower() for p in set_cookie.split(";")}
        assert {"httponly", "samesite", "expires", "path"} <= flags
        assert "samesite=strict" in set_cookie.lower()


async def test_wrong_key_is_refused_on_the_login_page(db_url: str, world: dict[str, Any]) -> None:
    async with client(settings_for(db_url)) as c:
        page = await c.get("/dashboard/login")
        token = re.search(r'name="login_token" value="([^"]+)"', page.text)
        assert token is not None
        bad = world["admin"][:-4] + "xxxx"
        r = await c.post("/dashboard/login", data={"api_key": bad, "login_token": token.group(1)})
        assert r.status_code == 401
        assert "unknown API key" in r.text
        assert (await c.get("/dashboard/overview", follow_redirects=False)).status_code == 303


@pytest.mark.slow  # a real send to a receiver, awaited
async def test_send_test_event_reaches_the_receiver_signed_and_is_audited(
    db_url: str, conn: psycopg.Connection[Any], receiver: Receiver
) -> None:
    acme = make_consumer(conn, "acme")
    hook = make_webhook(conn, acme, url=receiver.url("/hook"), name="to-receiver")
    key = admin_key(conn)
    async with client(settings_for(db_url)) as c:
        await sign_in(c, key)
        page = await c.get(f"/dashboard/webhooks/{hook}")
        r = await c.post(
            f"/dashboard/webhooks/{hook}/test",
            data={"csrf": csrf_of(page.text), "event_type": "system.health_check"},
        )
        assert r.status_code == 200, r.text
        assert 'data-testid="test-result"' in r.text
    assert await wait_until(lambda: len(receiver.to("/hook")) == 1, 10)
    got = receiver.to("/hook")[0]
    assert got.headers["webhook-id"].startswith("msg_test_")
    assert b"system.health_check" in got.body
    row = conn.execute("SELECT actor, target_id FROM whk.audit_log WHERE action = 'webhook.test'").fetchone()
    assert row is not None and row[0].startswith("apikey:") and row[1] == str(hook)


async def test_posts_without_the_session_csrf_token_are_refused(db_url: str, world: dict[str, Any]) -> None:
    async with client(settings_for(db_url)) as c:
        await sign_in(c, world["admin"])
        for path in (
            f"/dashboard/webhooks/{world['hook_a']}/pause",
            f"/dashboard/webhooks/{world['hook_a']}/test",
            f"/dashboard/deliveries/{world['dead_b']}/retry",
            "/dashboard/logout",
        ):
            for form in ({}, {"csrf": "forged"}):
                r = await c.post(path, data=form, follow_redirects=False)
                assert r.status_code == 403, (path, form, r.status_code)
        # another session's token is not this session's
        other = await c.get("/dashboard/overview")
        token = csrf_of(other.text)
        async with client(settings_for(db_url)) as c2:
            await sign_in(c2, world["admin"])
            r = await c2.post(f"/dashboard/webhooks/{world['hook_a']}/pause", data={"csrf": token})
            assert r.status_code == 403


async def test_a_consumer_gets_404_for_another_tenants_rows(db_url: str, world: dict[str, Any]) -> None:
    async with client(settings_for(db_url)) as c:
        await sign_in(c, world["a"])
        for path in (
            f"/dashboard/webhooks/{world['hook_b']}",
            f"/dashboard/deliveries/{world['dead_b']}",
            f"/dashboard/deliveries?webhook_id={world['hook_b']}",
        ):
            r = await c.get(path)
            assert r.status_code == 404, path
            assert "text/html" in r.headers["content-type"]
        token = csrf_of((await c.get("/dashboard/overview")).text)
        r = await c.post(f"/dashboard/deliveries/{world['dead_b']}/retry", data={"csrf": token})
        assert r.status_code == 404
        dead = (await c.get("/dashboard/dead")).text
        assert "hook-b" not in dead


async def test_revoking_the_key_ends_the_session_and_logout_is_audited(
    db_url: str, conn: psycopg.Connection[Any], world: dict[str, Any]
) -> None:
    async with client(settings_for(db_url)) as c:
        await sign_in(c, world["a"])
        assert (await c.get("/dashboard/overview")).status_code == 200
        conn.execute("UPDATE whk.api_keys SET revoked_at = now() WHERE consumer_id IS NOT NULL")
        r = await c.get("/dashboard/overview", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/dashboard/login")
    async with client(settings_for(db_url)) as c:
        await sign_in(c, world["admin"])
        token = csrf_of((await c.get("/dashboard/overview")).text)
        r = await c.post("/dashboard/logout", data={"csrf": token}, follow_redirects=False)
        assert r.status_code == 303
        assert (await c.get("/dashboard/overview", follow_redirects=False)).status_code == 303
    actions = [
        r[0]
        for r in conn.execute(
            "SELECT action FROM whk.audit_log WHERE action LIKE %s ORDER BY id", ["dashboard.%"]
        )
    ]
    assert actions == ["dashboard.login", "dashboard.login", "dashboard.logout"]


async def test_login_only_redirects_to_dashboard_paths(db_url: str, world: dict[str, Any]) -> None:
    async with client(settings_for(db_url)) as c:
        for target, expected in (
            ("https://evil.example/", "/dashboard/overview"),
            ("//evil.example/dashboard/x", "/dashboard/overview"),
            ("/dashboard//evil.example", "/dashboard/overview"),
            ("/dashboard/webhooks", "/dashboard/webhooks"),
        ):
            page = await c.get("/dashboard/login")
            token = re.search(r'name="login_token" value="([^"]+)"', page.text)
            assert token is not None
            r = await c.post(
                "/dashboard/login",
                data={"api_key": world["admin"], "login_token": token.group(1), "next": target},
                follow_redirects=False,
            )
            assert r.headers["location"] == expected, target


async def test_the_login_form_needs_its_own_token(db_url: str, world: dict[str, Any]) -> None:
    async with client(settings_for(db_url)) as c:
        r = await c.post("/dashboard/login", data={"api_key": world["admin"], "login_token": "x"})
        assert r.status_code == 403
        assert (await c.get("/dashboard/overview", follow_redirects=False)).status_code == 303


async def test_overview_windows_and_bad_parameters(db_url: str, world: dict[str, Any]) -> None:
    async with client(settings_for(db_url)) as c:
        await sign_in(c, world["admin"])
        for window in ("1h", "24h", "7d"):
            r = await c.get("/dashboard/overview", params={"window": window})
            assert r.status_code == 200
            assert f"Window {window}" in r.text
            live = await c.get("/dashboard/overview/live", params={"window": window})
            assert live.status_code == 200 and "<html" not in live.text  # a fragment for htmx
        for path, params in (
            ("/dashboard/overview", {"window": "1y"}),
            ("/dashboard/deliveries", {"status": "bogus"}),
            ("/dashboard/deliveries", {"webhook_id": "x"}),
            ("/dashboard/deliveries", {"created_from": "yesterday"}),
            ("/dashboard/dead", {"days": "0"}),
        ):
            r = await c.get(path, params=params)
            assert r.status_code == 400, (path, params)
            assert "text/html" in r.headers["content-type"]


async def test_the_delivery_log_pages_by_keyset(
    db_url: str, conn: psycopg.Connection[Any], world: dict[str, Any]
) -> None:
    ids = sorted(make_delivery(conn, world["hook_a"], status="delivered") for _ in range(60))
    async with client(settings_for(db_url)) as c:
        await sign_in(c, world["a"])
        first = await c.get("/dashboard/deliveries", params={"status": "delivered"})
        shown = [int(i) for i in re.findall(r'href="/dashboard/deliveries/(\d+)"', first.text)]
        assert shown == ids[::-1][:50]
        nxt = re.search(r'href="([^"]+)" data-testid="next"', first.text)
        assert nxt is not None
        second = await c.get(nxt.group(1).replace("&amp;", "&"))
        shown = [int(i) for i in re.findall(r'href="/dashboard/deliveries/(\d+)"', second.text)]
        assert shown == ids[::-1][50:]
        assert 'data-testid="next"' not in second.text


async def test_a_post_without_a_session_goes_to_the_login_page(db_url: str, world: dict[str, Any]) -> None:
    async with client(settings_for(db_url)) as c:
        r = await c.post(f"/dashboard/webhooks/{world['hook_a']}/pause", data={}, follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"] == "/dashboard/login?next=%2Fdashboard%2Foverview"
        r = await c.get("/dashboard/webhooks?after_id=1", follow_redirects=False)
        assert r.headers["location"] == "/dashboard/login?next=%2Fdashboard%2Fwebhooks%3Fafter_id%3D1"


def firing_count(html: str) -> int:
    found = re.search(r'data-testid="firing">(\d+)<', html)
    assert found is not None
    return int(found.group(1))


async def test_firing_alerts_on_the_overview_follow_tenancy(
    db_url: str, conn: psycopg.Connection[Any], world: dict[str, Any]
) -> None:
    owners = conn.execute(
        "SELECT consumer_id FROM whk.whk_01_webhooks WHERE id = ANY(%s) ORDER BY id",
        [[world["hook_a"], world["hook_b"]]],
    ).fetchall()
    a, b = owners[0][0], owners[1][0]
    for consumer, state, name in ((a, "firing", "a-firing"), (a, "ok", "a-ok"), (b, "firing", "b-firing")):
        conn.execute(
            "INSERT INTO whk.whk_06_alertas (consumer_id, name, condition, state) "
            'VALUES (%s, %s, \'{"metric": "dead_letters", "operator": ">", "threshold": 0}\', %s)',
            [consumer, name, state],
        )
    async with client(settings_for(db_url)) as c:
        await sign_in(c, world["a"])
        assert firing_count((await c.get("/dashboard/overview")).text) == 1
        page = (await c.get("/dashboard/alerts")).text
        assert "a-firing" in page and "a-ok" in page and "b-firing" not in page
    async with client(settings_for(db_url)) as c:
        await sign_in(c, world["admin"])
        assert firing_count((await c.get("/dashboard/overview")).text) == 2
        r = await c.get("/api/whk/monitoring/metrics", headers={"Authorization": f"Bearer {world['admin']}"})
        assert "whk_alerts_firing 2.0" in r.text


async def test_the_ip_allowlist_applies_to_the_dashboard(
    db_url: str, conn: psycopg.Connection[Any], world: dict[str, Any]
) -> None:
    async with client(settings_for(db_url)) as c:
        await sign_in(c, world["a"])
        assert (await c.get("/dashboard/overview")).status_code == 200
        # the tenant's allowlist changes: its open session is refused at once, and so is a new sign-in
        conn.execute("UPDATE whk.whk_04_assinantes SET allowed_ips = '{10.0.0.0/8}'::cidr[]")
        assert (await c.get("/dashboard/overview")).status_code == 403
        page = await c.get("/dashboard/login")
        token = re.search(r'name="login_token" value="([^"]+)"', page.text)
        assert token is not None
        r = await c.post("/dashboard/login", data={"api_key": world["a"], "login_token": token.group(1)})
        assert r.status_code == 401
        assert "not allowed" in r.text


async def test_the_webhook_list_shows_the_kpi_views_numbers(
    db_url: str, conn: psycopg.Connection[Any], world: dict[str, Any]
) -> None:
    """Success rate, p95 and the oldest due delivery of the list are whk.kpi_webhook_window's (one day)
    and whk.kpi_webhook_state's: the numbers the alerts evaluate."""
    hook = world["hook_a"]
    make_delivery(conn, hook, status="dead", attempts=3)  # three failed attempts
    make_delivery(conn, hook, status="delivered", attempts=1)
    waiting = make_delivery(conn, hook, status="pending")
    conn.execute(
        "UPDATE whk.delivery_queue SET next_attempt_at = now() - interval '10 minutes' WHERE id = %s",
        [waiting],
    )
    conn.execute("SELECT whk.kpi_rollup(3600)")
    kpi = conn.execute(
        "SELECT k.attempts, k.failure_rate, k.latency_p95_ms FROM whk.kpi_webhook_window k "
        "WHERE k.webhook_id = %s AND k.window_s = 86400",
        [hook],
    ).fetchone()
    assert kpi is not None and kpi[0] == 4 and kpi[1] == pytest.approx(0.75)
    async with client(settings_for(db_url)) as c:
        await sign_in(c, world["a"])
        page = (await c.get("/dashboard/webhooks")).text
        state = conn.execute(
            "SELECT oldest_pending_age_s FROM whk.kpi_webhook_state WHERE webhook_id = %s", [hook]
        ).fetchone()
    assert state is not None
    (row,) = [chunk for chunk in page.split("<tr>") if "hook-a" in chunk]
    cell = re.search(r'data-testid="success">([^<]+)<br><small>([^<]+) attempts', row)
    assert cell is not None and cell.groups() == (pct(1 - kpi[1]), num(kpi[0]))
    assert f"≤ {ms(kpi[2])}" in row
    backlog = re.search(r'data-testid="backlog">1<br><small>oldest due ([^<]+)</small>', row)
    assert backlog is not None
    assert backlog.group(1) == age(state[0])


async def test_the_admin_health_panel_shows_kpi_platform(
    db_url: str, conn: psycopg.Connection[Any], world: dict[str, Any]
) -> None:
    conn.execute(
        "INSERT INTO whk.webhook_runtime (webhook_id, breaker_state, opened_at) VALUES (%s, 'open', now())",
        [world["hook_a"]],
    )
    conn.execute("UPDATE whk.whk_01_webhooks SET status = 'disabled' WHERE id = %s", [world["hook_b"]])
    conn.execute(
        "INSERT INTO whk.outbox (event_type, data, operation, created_at) "
        "VALUES ('order.created', '{}', 'EMIT', now() - interval '5 minutes')"
    )
    kpi = conn.execute(
        "SELECT oldest_unrouted_age_s, webhooks_disabled, breakers_open FROM whk.kpi_platform"
    ).fetchone()
    assert kpi is not None and kpi[1:] == (1, 1) and kpi[0] >= 300
    async with client(settings_for(db_url)) as c:
        await sign_in(c, world["admin"])
        page = (await c.get("/dashboard/overview")).text

    def shown(testid: str) -> str:
        found = re.search(rf'data-testid="{testid}">([^<]+)<', page)
        assert found is not None, testid
        return found.group(1)

    assert shown("breakers-open") == "1" and shown("webhooks-disabled") == "1"
    assert shown("oldest-unrouted") == "5 min"


async def test_alert_actions_follow_the_apis_tenancy_scopes_and_bounds(
    db_url: str, conn: psycopg.Connection[Any], world: dict[str, Any]
) -> None:
    """The dashboard's acknowledge and silence run the API's code: another tenant's alert is a 404 page,
    a key without monitoring:write a 403, a silence out of the API's bounds a 400, and nothing changes."""
    owners = conn.execute(
        "SELECT consumer_id FROM whk.whk_01_webhooks WHERE id = ANY(%s) ORDER BY id",
        [[world["hook_a"], world["hook_b"]]],
    ).fetchall()
    a, b = owners[0][0], owners[1][0]
    ids = {}
    for consumer, name in ((a, "a-firing"), (b, "b-firing")):
        row = conn.execute(
            "INSERT INTO whk.whk_06_alertas (consumer_id, name, condition, state) "
            'VALUES (%s, %s, \'{"metric": "dead_letters", "operator": ">", "threshold": 0}\', \'firing\') '
            "RETURNING id",
            [consumer, name],
        ).fetchone()
        assert row is not None
        ids[name] = row[0]
    reader = consumer_key(conn, a, scopes=["monitoring:read"])
    async with client(settings_for(db_url)) as c:
        await sign_in(c, world["a"])
        token = csrf_of((await c.get("/dashboard/alerts")).text)
        r = await c.post(f"/dashboard/alerts/{ids['b-firing']}/acknowledge", data={"csrf": token})
        assert r.status_code == 404 and f"alert {ids['b-firing']} not found" in r.text
        r = await c.post(
            f"/dashboard/alerts/{ids['a-firing']}/silence", data={"csrf": token, "duration_s": "99999999"}
        )
        assert r.status_code == 400
        r = await c.post(f"/dashboard/alerts/{ids['a-firing']}/mute", data={"csrf": token})
        assert r.status_code == 404
    async with client(settings_for(db_url)) as c:
        await sign_in(c, reader)
        token = csrf_of((await c.get("/dashboard/alerts")).text)
        r = await c.post(f"/dashboard/alerts/{ids['a-firing']}/acknowledge", data={"csrf": token})
        assert r.status_code == 403
    changed = conn.execute(
        "SELECT count(*) FROM whk.whk_06_alertas "
        "WHERE acknowledged_at IS NOT NULL OR silenced_until IS NOT NULL"
    ).fetchone()
    assert changed == (0,)
    assert conn.execute("SELECT count(*) FROM whk.audit_log WHERE action LIKE 'alert.%%'").fetchone() == (0,)


def bulk_rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT id, consumer_id, webhook_id, statuses, created_from IS NOT NULL, total, state, created_by "
        "FROM whk.bulk_retries ORDER BY id"
    ).fetchall()


def statuses(conn: psycopg.Connection[Any], ids: list[int]) -> list[str]:
    rows = conn.execute(
        "SELECT status FROM whk.delivery_queue WHERE id = ANY(%s) ORDER BY id", [ids]
    ).fetchall()
    return [r[0] for r in rows]


@pytest.mark.slow  # the job worker runs the bulk retry
async def test_retry_all_starts_a_bulk_retry_job_and_follows_its_progress(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    """The dashboard's "retry all" is the API's bulk retry: a whk.bulk_retries row for the signed-in
    tenant with the webhook and status filters, its job queued (nothing re-queued by the request itself),
    the audit row the API writes (bulk_retry.start), and a redirect to a progress page the worker's
    batches update."""
    acme = make_consumer(conn, "acme")
    other = make_consumer(conn, "other")
    hook = make_webhook(conn, acme, name="acme-hook")
    theirs = make_webhook(conn, other, name="other-hook")
    dead = [make_delivery(conn, hook, status="dead", attempts=3, data={"n": i}) for i in range(3)]
    their_dead = make_delivery(conn, theirs, status="dead", attempts=3)
    key, admin = consumer_key(conn, acme), admin_key(conn)
    async with client(settings_for(db_url)) as c:
        await sign_in(c, key)
        confirm = await c.get(f"/dashboard/dead/confirm?webhook_id={hook}&days=7")
        assert confirm.status_code == 200, confirm.text
        assert re.search(r'data-testid="count">3<', confirm.text)
        r = await c.post(
            "/dashboard/dead/retry-all",
            data={"csrf": csrf_of(confirm.text), "webhook_id": str(hook), "days": "7"},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        ((bulk_id, tenant, webhook, wanted, windowed, total, state, created_by),) = bulk_rows(conn)
        assert r.headers["location"] == f"/dashboard/bulk-retries/{bulk_id}"
        assert (tenant, webhook, wanted, windowed, total, state) == (acme, hook, ["dead"], True, 3, "queued")
        assert created_by.startswith("apikey:")
        # The job does the work, not the request.
        assert statuses(conn, dead) == ["dead"] * 3
        (queued,) = conn.execute(
            "SELECT count(*) FROM whk.pgqueuer "
            "WHERE entrypoint = 'bulk_retry' AND payload = convert_to(%s, 'UTF8')",
            [str(bulk_id)],
        ).fetchone()
        assert queued == 1
        audit = conn.execute(
            "SELECT actor, consumer_id, target_type, target_id, after FROM whk.audit_log "
            "WHERE action = 'bulk_retry.start'"
        ).fetchall()
        assert len(audit) == 1
        actor, audited_tenant, target_type, target_id, after = audit[0]
        assert (actor, audited_tenant, target_type, target_id) == (
            created_by,
            acme,
            "bulk_retry",
            str(bulk_id),
        )
        assert after["via"] == "dashboard" and after["total"] == 3
        assert after["filters"]["webhook_id"] == hook and after["filters"]["status"] == ["dead"]
        assert after["filters"]["created_from"] is not None
        page = await c.get(r.headers["location"])
        assert page.status_code == 200
        assert 'data-state="queued"' in page.text and 'hx-trigger="every 2s"' in page.text
        assert re.search(r'data-testid="bulk-total">3<', page.text)

        async with worker(ops_settings(db_url)):
            assert await wait_until(lambda: bulk_rows(conn)[0][6] == "done", 30)
        assert statuses(conn, dead) == ["pending"] * 3
        assert statuses(conn, [their_dead]) == ["dead"]
        page = await c.get(f"/dashboard/bulk-retries/{bulk_id}")
        assert 'data-state="done"' in page.text and "hx-trigger" not in page.text
        assert re.search(r'data-testid="bulk-requeued">3<', page.text)

        # Tenancy: another tenant's webhook cannot be bulk-retried, an admin's retry cannot be seen.
        token = csrf_of(page.text)
        r = await c.post(
            "/dashboard/dead/retry-all", data={"csrf": token, "webhook_id": str(theirs), "days": "7"}
        )
        assert r.status_code == 404
        assert len(bulk_rows(conn)) == 1
    async with client(settings_for(db_url)) as c:
        await sign_in(c, admin)
        confirm = await c.get(f"/dashboard/dead/confirm?webhook_id={theirs}&days=7")
        r = await c.post(
            "/dashboard/dead/retry-all",
            data={"csrf": csrf_of(confirm.text), "webhook_id": str(theirs), "days": "7"},
            follow_redirects=False,
        )
        assert r.status_code == 303
        admins = bulk_rows(conn)[1]
        assert admins[1:3] == (None, theirs)
    async with client(settings_for(db_url)) as c:
        await sign_in(c, key)
        assert (await c.get(f"/dashboard/bulk-retries/{admins[0]}")).status_code == 404
