"""Fixtures of the resource endpoint tests: the real app on the test database, an admin key, two
consumers (tenants) with their own keys, and helpers to put deliveries and attempts in place."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from tests.support.resources import Tenant, World, make_consumer
from whk.settings import Settings


@pytest.fixture
def world(conn: psycopg.Connection[Any]) -> World:
    """An admin key and two tenants (consumers) with full-scope keys."""
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


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(settings)
    async with AsyncTestClient(app=app) as c:
        yield c
