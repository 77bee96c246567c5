"""Running dispatchers in tests: in-process (``running``) or as a `whk dispatcher` subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg

from dispatcher.app import run_dispatcher
from tests.support.delivery import TEST_SECRET_KEYS
from whk.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
WHK = Path(sys.executable).parent / "whk"

# Fast timings for tests; the lease stays >= 3x the attempt deadline as the settings demand. Every
# dispatcher under test acts as its least-privilege role, so a missing grant fails the tests.
FAST_ENV = {
    "WHK_DISPATCHER_DB_ROLE": "whk_dispatcher",
    "WHK_ALLOW_PRIVATE_CIDRS": "127.0.0.0/8,::1/128",
    "WHK_ENV": "development",
    "WHK_SECRET_KEYS": TEST_SECRET_KEYS,
    "WHK_POLL_INTERVAL": "0.5",
    "WHK_ATTEMPT_TIMEOUT": "2",
    "WHK_LEASE_SECONDS": "6",
    "WHK_HEARTBEAT_INTERVAL": "0.5",
    "WHK_SHUTDOWN_GRACE": "3",
}


def fast_settings(db_url: str, **overrides: str) -> Settings:
    return load_settings({**FAST_ENV, "WHK_DATABASE_URL": db_url, **overrides})


def compress_schedule(
    conn: psycopg.Connection[Any], schedule: list[float], *, floor: float = 0.1, jitter: float = 0.0
) -> None:
    """Global retry policy for tests: tiny delays, no jitter."""
    policy = {
        "schedule_s": schedule,
        "jitter": jitter,
        "throttle_floor_s": floor,
        "retry_after_cap_factor": 2.0,
    }
    conn.execute(
        "UPDATE whk.whk_05_configuracoes SET value = %s::jsonb WHERE key = 'retry.policy'",
        [json.dumps(policy)],
    )


@contextlib.asynccontextmanager
async def running(settings: Settings, *, grace: float = 20.0) -> AsyncIterator[asyncio.Task[None]]:
    """Run a dispatcher inside this event loop for the duration of the block."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_dispatcher(settings, stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, grace)


def start_process(db_url: str, name: str, **env: str) -> subprocess.Popen[bytes]:
    """`whk dispatcher` as a subprocess (its log goes to the test's captured stderr)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    full.update(FAST_ENV)
    full.update({"WHK_DATABASE_URL": db_url, "WHK_DISPATCHER_ID": name, "WHK_LOG_LEVEL": "INFO"})
    full.update(env)
    return subprocess.Popen([str(WHK), "dispatcher"], env=full, cwd=REPO)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return -9
    return proc.returncode
