"""Fixtures of the resource endpoint tests: the real app on the test database, an admin key, two
consumers (tenants) with their own keys, and helpers to put deliveries and attempts in place."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app, open_api_pool
from tests.support.api_platform import settings_for
from tests.support.resources import Tenant, World, make_consumer
from whk.db import configure_json
from whk.settings import Settings


@pytest.fixture
def world(conn: psycopg.Connection[Any]) -> World:
    """An admin key and two tenants (consumers) with full-scope keys."""
    return make_world(conn)


def make_world(conn: psycopg.Connection[Any]) -> World:
    from api.keys import create_api_key

    admin = create_api_key(conn, admin=True, consumer_id=None, name="test admin", actor="test")
    tenants: list[Tenant] = []
    for name in ("acme", "globex"):
        cid = make_consumer(conn, name)
        key = create_api_key(
            conn, admin=False, consumer_id=cid, name=f"{name} key", scopes=["*"], actor="test"
        )
        tenants.append(Tenant(consumer_id=cid, key=key))
    return World(admin_key=admin, a=tenants[0], b=tenants[1])


@pytest.fixture(scope="module")
async def module_client(module_db_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    """One app per test module: building an app (routes, its OpenAPI document, the request contract) costs
    ~0.5 s of CPU, most of the fast lane's time when each test built its own. ``client`` points it at the
    test's own database."""
    async with AsyncTestClient(app=create_app(settings_for(module_db_url))) as c:
        yield c


@pytest.fixture
async def client(
    settings: Settings, module_client: AsyncTestClient[Any]
) -> AsyncIterator[AsyncTestClient[Any]]:
    """The module's app serving the test's database: its pool and settings swapped in for the test (every
    handler reads them from app.state per request), cookies and default headers as new."""
    app = module_client.app
    saved = (app.state.pool, app.state.settings, dict(module_client.headers))
    pool = await open_api_pool(settings)
    app.state.pool, app.state.settings = pool, settings
    module_client.cookies.clear()
    try:
        yield module_client
    finally:
        app.state.pool, app.state.settings = saved[0], saved[1]
        module_client.headers.clear()
        module_client.headers.update(saved[2])
        module_client.cookies.clear()
        await pool.close()


# For the cases of a parametrised test whose every request the API refuses (bad input: 400/422), so
# nothing is written: they share one database, world and app per test module instead of each building
# its own (an app costs ~1 s of CPU to build and start). Each case still sends its own request.


@pytest.fixture(scope="module")
def refusing_conn(module_db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(module_db_url, autocommit=True) as c:
        configure_json(c)
        yield c


@pytest.fixture(scope="module")
def refusing_world(refusing_conn: psycopg.Connection[Any]) -> World:
    return make_world(refusing_conn)


@pytest.fixture(scope="module")
async def refusing_client(module_db_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(settings_for(module_db_url))) as c:
        yield c
