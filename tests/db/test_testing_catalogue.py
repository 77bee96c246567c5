"""The catalogue packaged with whk.testing equals the SQL seed, and the factory's envelopes pass WHK's own
validation (whk.validate_payload, the PL/pgSQL validator the router uses), not only the plugin's."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from whk.testing.catalogue import read_seed_catalogue
from whk.testing.events import EventFactory, load_catalogue

pytestmark = pytest.mark.db


def test_packaged_catalogue_equals_the_sql_seed(conn: psycopg.Connection[Any]):
    fresh = read_seed_catalogue(conn)
    assert fresh["event_types"], "the seed catalogue is empty"
    assert load_catalogue() == fresh, (
        "whk/testing/catalogue.json is stale: regenerate it with .venv/bin/python -m tests.support.catalogue"
    )


def test_factory_envelopes_pass_whks_validation(conn: psycopg.Connection[Any]):
    factory = EventFactory.packaged()
    for name in factory.names:
        for version in factory.versions(name):
            envelope = factory(name, version)
            problem = conn.execute(
                "SELECT whk.validate_payload(%s, %s, %s::jsonb)",
                (name, int(version.split(".")[0]), json.dumps(envelope)),
            ).fetchone()
            assert problem == (None,), (name, version, problem)
    # and a broken one is refused by WHK too, so the check above can fail
    broken = factory("order.shipped", new={"status": "pending"}, validate=False)
    problem = conn.execute(
        "SELECT whk.validate_payload('order.shipped', 1, %s::jsonb)", (json.dumps(broken),)
    ).fetchone()
    assert problem is not None and problem[0] is not None
