"""The dashboard over HTTP (no browser): sign-in, cookie flags, CSRF, tenancy, audit, every page renders."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.support.api_platform import admin_key, client, consumer_key, settings_for
from tests.support.resources import make_consumer, make_delivery, make_webhook

pytestmark = [pytest.mark.db]

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
