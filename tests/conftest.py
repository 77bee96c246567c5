"""Shared fixtures: one throwaway PostgreSQL per test session, a migrated template, a fresh DB per test.

Fixtures other test packages rely on (see the contract in docs/testing.md):
``pg_server`` (session), ``template_db`` (session, migrated), ``db_url`` (fresh database cloned from the
template), ``conn`` / ``aconn`` (autocommit connections to it), ``settings`` (a ``Settings`` for it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from tests.support.dbsupply import DatabaseSupply
from tests.support.pg import PgServer, migrate_database, start_server
from whk.db import configure_json
from whk.settings import Settings, load_settings


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = start_server(in_ram=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def template_db(pg_server: PgServer) -> str:
    """A database with every migration applied, used as the template of each test's database."""
    name = pg_server.create_database("whk_template")
    migrate_database(pg_server.dsn(name))
    return name


@pytest.fixture(scope="session")
def database_supply(pg_server: PgServer, template_db: str) -> Iterator[DatabaseSupply]:
    """Clones of the template made ahead by background threads (tests/support/dbsupply.py)."""
    supply = DatabaseSupply(pg_server, template_db)
    try:
        yield supply
    finally:
        supply.close()


def _supplied(pg_server: PgServer, database_supply: DatabaseSupply) -> Iterator[str]:
    name = database_supply.take()
    try:
        yield pg_server.dsn(name)
    finally:
        database_supply.give_back(name)


@pytest.fixture
def db_url(pg_server: PgServer, database_supply: DatabaseSupply) -> Iterator[str]:
    yield from _supplied(pg_server, database_supply)


@pytest.fixture(scope="module")
def module_db_url(pg_server: PgServer, database_supply: DatabaseSupply) -> Iterator[str]:
    """One migrated database shared by a test module: for cases that write nothing (requests the API
    refuses) and for an app shared by the module's tests, each of which still gets its own ``db_url``."""
    yield from _supplied(pg_server, database_supply)


@pytest.fixture
def empty_db_url(pg_server: PgServer) -> Iterator[str]:
    """A database with nothing applied (for migration tests)."""
    name = pg_server.create_database()
    try:
        yield pg_server.dsn(name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as c:
        configure_json(c)
        yield c


@pytest.fixture
async def aconn(db_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    c = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    configure_json(c)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
def settings(db_url: str) -> Settings:
    """Settings for the test database; the API and dispatcher built from them act as their
    least-privilege roles (whk_app, whk_dispatcher), so a missing grant fails the tests."""
    return load_settings(
        {
            "WHK_DATABASE_URL": db_url,
            "WHK_API_DB_ROLE": "whk_app",
            "WHK_DISPATCHER_DB_ROLE": "whk_dispatcher",
            "WHK_ALLOW_PRIVATE_CIDRS": "127.0.0.0/8,::1/128",
            "WHK_ENV": "development",
        }
    )
