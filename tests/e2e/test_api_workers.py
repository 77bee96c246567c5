"""`whk api` with WHK_API_WORKERS=2: both workers serve, the per-consumer rate limit is one limit across
them (its state is in PostgreSQL), SIGTERM stops every worker, and a worker that cannot start makes
`whk api` exit non-zero."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import port_for
import psutil
import psycopg
import pytest

from tests.support.api_platform import bearer, consumer_key, make_consumer
from tests.support.dispatch import FAST_ENV
from tests.support.pg import PgServer

pytestmark = [pytest.mark.db, pytest.mark.e2e, pytest.mark.slow]

WHK = str(Path(sys.executable).with_name("whk"))
LIMIT = 12  # requests per window for the consumer


def _start(dsn: str, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    env.update({**FAST_ENV, "WHK_DATABASE_URL": dsn, "WHK_API_PORT": str(port), "WHK_API_WORKERS": "2"})
    return subprocess.Popen(
        [WHK, "api"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _workers(proc: subprocess.Popen[str], port: int) -> list[psutil.Process]:
    """The worker processes: children of `whk api` holding the shared listening socket."""
    out = []
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if any(
                c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in child.net_connections("tcp")
            ):
                out.append(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def _serving(worker: psutil.Process, port: int) -> int:
    """Established client connections the worker accepted on the API port."""
    return sum(
        1
        for c in worker.net_connections("tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
    )


def _db_connected(worker: psutil.Process, pg_port: int) -> bool:
    """The worker opened its pool (its lifespan ran): a connection to PostgreSQL."""
    return any(c.raddr and c.raddr.port == pg_port for c in worker.net_connections("tcp"))


def test_two_workers_share_the_rate_limit_and_stop_on_sigterm(db_url: str, pg_server: PgServer) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        key = consumer_key(conn, make_consumer(conn, "workers", api_rate_limit_per_minute=LIMIT))
    port = port_for.select_random()
    base = f"http://127.0.0.1:{port}"
    proc = _start(db_url, port)
    clients: list[httpx.Client] = []
    try:
        _until(lambda: len(_workers(proc, port)) == 2, 60, "two workers did not start")
        workers = _workers(proc, port)
        _until(lambda: all(_db_connected(w, pg_server.port) for w in workers), 60, "a worker has no pool")

        # Keep-alive connections until each worker holds (has accepted and answered on) at least one.
        while not all(_serving(w, port) for w in workers):
            assert len(clients) < 200, "one worker never accepted a connection"
            client = httpx.Client(base_url=base, timeout=10)
            assert client.get("/api/whk/monitoring/health").status_code == 200
            clients.append(client)
        assert sum(_serving(w, port) for w in workers) == len(clients)

        # One consumer, requests round-robin over connections held by both workers: one limit in total
        # (a limit kept per worker would let each worker's first requests through).
        total = max(3 * LIMIT, len(clients))
        headers = bearer(key)
        codes = [
            clients[i % len(clients)].get("/api/whk/webhooks", headers=headers).status_code
            for i in range(total)
        ]
        assert codes.count(200) == LIMIT, codes
        assert codes.count(429) == total - LIMIT, codes

        for client in clients:
            client.close()
        pids = [w.pid for w in workers]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        _until(lambda: not any(psutil.pid_exists(p) for p in pids), 10, "a worker outlived SIGTERM")
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/api/whk/monitoring/health", timeout=2)
    finally:
        for client in clients:
            client.close()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_a_worker_that_cannot_start_fails_the_command(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO whk.schema_migrations (version, name) VALUES (999, 'future')")
    proc = _start(db_url, port_for.select_random())
    try:
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert "schema" in err.lower(), err
