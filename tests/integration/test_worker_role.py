"""The operations worker acts as WHK_DISPATCHER_DB_ROLE, like the dispatcher: a superuser DSN with the
setting makes every connection of the worker (its psycopg pool and pgqueuer's asyncpg connection) run its
SQL as whk_dispatcher; without it, `whk worker` refuses to start in production. Real PostgreSQL; the role
is seen by triggers the test installs on the tables each connection writes."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import psycopg
import pytest

from tests.support.dispatch import REPO, WHK
from tests.support.ops import OPS_ENV, ops_settings, worker
from tests.support.receiver import wait_until

pytestmark = [pytest.mark.db]

PROD_KEYS = "k1:" + "A" * 43 + "="

# Who writes: the pool records each evaluate_alerts run in whk.ops_job_runs; pgqueuer's own connection
# registers and picks the schedules in whk.pgqueuer_schedules. The trigger function is SECURITY INVOKER,
# so current_user is the role the writing connection acts as.
SPY_SQL = """
CREATE TABLE public.seen_roles (tbl text NOT NULL, role text NOT NULL, login text NOT NULL);
GRANT INSERT ON public.seen_roles TO PUBLIC;
CREATE FUNCTION public.note_role() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.seen_roles VALUES (TG_TABLE_NAME, current_user, session_user);
    RETURN NULL;
END;
$$;
CREATE TRIGGER note_role AFTER INSERT OR UPDATE ON whk.ops_job_runs
    FOR EACH ROW EXECUTE FUNCTION public.note_role();
CREATE TRIGGER note_role AFTER INSERT OR UPDATE ON whk.pgqueuer_schedules
    FOR EACH ROW EXECUTE FUNCTION public.note_role();
"""


def install_spy(conn: psycopg.Connection[Any]) -> str:
    conn.execute(SPY_SQL)
    (login,) = conn.execute("SELECT current_user::text").fetchone() or ("",)
    (superuser,) = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() or (
        False,
    )
    assert superuser, "the test DSN must be a superuser's for this test to mean anything"
    return str(login)


def seen(conn: psycopg.Connection[Any]) -> dict[str, set[tuple[str, str]]]:
    out: dict[str, set[tuple[str, str]]] = {}
    for tbl, role, login in conn.execute("SELECT tbl, role, login FROM public.seen_roles").fetchall():
        out.setdefault(tbl, set()).add((role, login))
    return out


def both_wrote(conn: psycopg.Connection[Any]) -> bool:
    return {"ops_job_runs", "pgqueuer_schedules"} <= seen(conn).keys()


async def test_worker_connections_act_as_the_dispatcher_role(db_url, conn):
    login = install_spy(conn)
    async with worker(ops_settings(db_url)):
        assert await wait_until(lambda: both_wrote(conn), 30)
    by_table = seen(conn)
    # Logged in as the superuser, acting as whk_dispatcher on both connections.
    assert by_table["ops_job_runs"] == {("whk_dispatcher", login)}
    assert by_table["pgqueuer_schedules"] == {("whk_dispatcher", login)}


@pytest.mark.e2e
@pytest.mark.slow  # `whk worker` as a subprocess, twice
async def test_whk_worker_acts_as_the_role_and_refuses_a_superuser_in_production(db_url, conn):
    login = install_spy(conn)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    env.update({**OPS_ENV, "WHK_DATABASE_URL": db_url, "WHK_ENV": "production", "WHK_SECRET_KEYS": PROD_KEYS})
    del env["WHK_ALLOW_PRIVATE_CIDRS"]  # development only
    role = env.pop("WHK_DISPATCHER_DB_ROLE")
    refused = subprocess.run(
        [str(WHK), "worker"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1, refused.stderr
    assert "`whk worker` refuses to start: it is connected as" in refused.stderr
    assert "WHK_DISPATCHER_DB_ROLE=whk_dispatcher" in refused.stderr
    assert seen(conn) == {}
    # The same superuser DSN with WHK_DISPATCHER_DB_ROLE starts, and its SQL runs as whk_dispatcher.
    proc = subprocess.Popen([str(WHK), "worker"], env={**env, "WHK_DISPATCHER_DB_ROLE": role}, cwd=REPO)
    try:
        assert await wait_until(lambda: both_wrote(conn), 60)
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    assert {role for rows in seen(conn).values() for role, _ in rows} == {"whk_dispatcher"}
    assert {who for rows in seen(conn).values() for _, who in rows} == {login}
