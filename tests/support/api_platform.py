"""Helpers for the API platform tests: settings, consumers, keys, an app client, a real server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import psycopg
import uvicorn
from litestar import Litestar, get
from litestar.params import FromPath
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.keys import create_api_key
from whk.settings import Settings, load_settings

PROBLEM = "application/problem+json"


def settings_for(db_url: str, **env: str) -> Settings:
    """Settings of an API under test; it acts as its least-privilege role, so a missing grant fails."""
    base = {
        "WHK_API_DB_ROLE": "whk_app",
        "WHK_DATABASE_URL": db_url,
        "WHK_ALLOW_PRIVATE_CIDRS": "127.0.0.0/8,::1/128",
        "WHK_ENV": "development",
    }
    base.update(env)
    return load_settings(base)


def make_consumer(
    conn: psycopg.Connection[Any],
    name: str,
    *,
    allowed_ips: Sequence[str] = (),
    api_rate_limit_per_minute: int | None = None,
    status: str = "active",
) -> int:
    row = conn.execute(
        "INSERT INTO whk.whk_04_assinantes (name, allowed_ips, api_rate_limit_per_minute, status) "
        "VALUES (%s, %s::cidr[], %s, %s) RETURNING id",
        (name, list(allowed_ips), api_rate_limit_per_minute, status),
    ).fetchone()
    assert row is not None
    return int(row[0])


def admin_key(conn: psycopg.Connection[Any]) -> str:
    return create_api_key(conn, admin=True, consumer_id=None, name="test admin")


def consumer_key(conn: psycopg.Connection[Any], consumer_id: int, scopes: Sequence[str] = ()) -> str:
    return create_api_key(
        conn, admin=False, consumer_id=consumer_id, name=f"key {consumer_id}", scopes=scopes
    )


def secret_part(key: str) -> str:
    """The secret of ``whk_<12-char prefix>_<secret>`` (the secret itself may contain '_')."""
    return key[len("whk_") + 12 + 1 :]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _catch_all(prefix: str) -> Any:
    @get(f"{prefix}/{{rest:path}}", operation_id=f"testCatchAll{len(prefix)}", sync_to_thread=False)
    def handler(rest: FromPath[str]) -> dict[str, str]:
        return {"reached": f"{prefix}{rest}"}

    return handler


@get("/api/whk/monitoring/health", operation_id="testHealth", sync_to_thread=False)
def fake_health() -> dict[str, str]:
    return {"status": "ok"}


# Test-only handlers answering any path under these prefixes, so look-alike paths reach *a* handler
# (Litestar's router does not backtrack from a static branch to a parameter at the root).
LOOKALIKE_HANDLERS = [
    fake_health,
    *(_catch_all(p) for p in ("", "/api/whk", "/api/whk/monitoring", "/api/whk/webhooks", "/x")),
]


def has_route(app: Litestar, path: str) -> bool:
    return any(r.path == path for r in app.routes)


@contextlib.asynccontextmanager
async def client(
    settings: Settings, *extra: Any, resource_routes: bool = True
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    app = create_app(settings, extra_route_handlers=extra, resource_routes=resource_routes)
    async with AsyncTestClient(app) as c:
        yield c


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def real_server(settings: Settings) -> AsyncIterator[str]:
    """The API served by uvicorn in this event loop on 127.0.0.1 (the same config `whk api` uses)."""
    from api.main import uvicorn_config

    port = free_port()
    config = uvicorn_config(
        settings.__class__(core=settings.core, dispatcher=settings.dispatcher, api=_with_port(settings, port))
    )
    config.log_level = "warning"
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        # A deadline, not a count of polls: on a loaded machine the app's start-up (pool, schema check,
        # OpenAPI document) can take seconds.
        deadline = time.monotonic() + 60
        while not server.started and time.monotonic() < deadline:
            if task.done():
                _result(task)
            await asyncio.sleep(0.02)
        assert server.started, "uvicorn did not start within 60 s"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(asyncio.shield(task), 15)
        _result(task)


def _result(task: asyncio.Task[None]) -> None:
    """The server task's outcome; uvicorn's ``sys.exit(3)`` on a failed start becomes a test error instead of
    ending the whole pytest run."""
    try:
        task.result()
    except SystemExit as exc:
        raise RuntimeError(f"uvicorn exited with code {exc.code} (failed start: see the log above)") from None


def _with_port(settings: Settings, port: int) -> Any:
    import dataclasses

    return dataclasses.replace(settings.api, host="127.0.0.1", port=port)


def http_client(source: str) -> httpx.AsyncClient:
    """An httpx client whose connections leave from ``source`` (e.g. 127.0.0.2)."""
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(local_address=source), timeout=10, trust_env=False
    )
