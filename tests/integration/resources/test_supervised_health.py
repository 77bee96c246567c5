"""Health reports the children `whk up` supervises (whk.supervised_processes): a failing one is a problem,
rows of a supervisor that stopped refreshing them are ignored."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

pytestmark = pytest.mark.db

HEALTH = "/api/whk/monitoring/health"


def _row(conn: psycopg.Connection[Any], supervisor: str, name: str, state: str, age_s: float = 0) -> None:
    conn.execute(
        "INSERT INTO whk.supervised_processes (supervisor, name, pid, state, restarts, crashes_in_window, "
        "last_exit, last_exit_at, updated_at) VALUES (%s, %s, NULL, %s, 7, 5, 'exited with code 1', now(), "
        "now() - make_interval(secs => %s))",
        (supervisor, name, state, age_s),
    )


async def test_failing_child_is_a_problem_and_stale_rows_are_ignored(
    client: AsyncTestClient[Any], conn: psycopg.Connection[Any]
):
    conn.execute("INSERT INTO whk.dispatchers (id, hostname, pid, version) VALUES ('d1', 'host', 1, 'test')")
    body = (await client.get(HEALTH)).json()
    assert body["status"] == "ok" and body["supervised"] == []

    _row(conn, "host-1", "api", "running")
    _row(conn, "host-1", "dispatcher", "failing")
    _row(conn, "gone-9", "dispatcher", "failing", age_s=3600)  # a `whk up` killed long ago
    body = (await client.get(HEALTH)).json()
    assert [(p["supervisor"], p["name"], p["state"]) for p in body["supervised"]] == [
        ("host-1", "api", "running"),
        ("host-1", "dispatcher", "failing"),
    ]
    assert body["status"] == "degraded"
    (problem,) = body["problems"]
    assert problem.startswith("`whk dispatcher` under `whk up` (host-1) is failing: 5 crashes")
    assert "exited with code 1" in problem

    conn.execute("UPDATE whk.supervised_processes SET state = 'running' WHERE supervisor = 'host-1'")
    body = (await client.get(HEALTH)).json()
    assert body["status"] == "ok" and body["problems"] == []


def test_supervised_rows_are_checked(conn: psycopg.Connection[Any]):
    with pytest.raises(psycopg.errors.CheckViolation):
        _row(conn, "host-1", "dispatcher", "exploded")
