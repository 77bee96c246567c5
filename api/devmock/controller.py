"""``/api/whk/dev/mock/{name}``: mock receivers for development (WHK_ENV=development only).

Point a webhook at ``http://127.0.0.1:8080/api/whk/dev/mock/orders`` and every delivery is stored with its
headers and body; credentials in the headers are masked before they are stored, by the attempt log's rule
(``whk.redact``). ``?status=503`` or ``?delay_ms=2000`` on the webhook URL makes the mock answer with that
status or that late, to watch retries, throttling and timeouts without writing a receiver. The POST takes
no API credential (the dispatcher sends none); reading and clearing what arrived needs an admin.
In production every route answers 404.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import Parameter, PathParameter, SkipValidation
from litestar.status_codes import HTTP_204_NO_CONTENT
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from api.context import settings_dependency
from api.deps import admin_only
from api.errors import NotFound, Unprocessable
from api.rows import fetch_all, fetch_value
from whk.redact import mask_headers
from whk.settings import Settings
from whk.sqlfiles import load_queries

__all__ = ["MockController"]

BODY_KEEP_BYTES = 256 * 1024
NAME = r"^[A-Za-z0-9_-]{1,64}$"
_NAME_RE = re.compile(NAME)
MockName = Annotated[str, PathParameter(pattern=NAME, description="mock endpoint name")]


class Received(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    mock_name: str
    received_at: datetime
    method: str
    headers: Annotated[
        dict[str, str],
        msgspec.Meta(description="received headers (lower-case names); credentials masked as `***`"),
    ]
    body: str
    body_size: int
    replied_status: int


class Ack(msgspec.Struct, frozen=True, kw_only=True):
    received: int
    mock: str


def _checked(settings: Settings, name: str) -> str:
    """404 outside development; 422 for a mock name that is not 1-64 of [A-Za-z0-9_-]."""
    if settings.core.environment != "development":
        raise NotFound("mock endpoints exist only when WHK_ENV=development")
    if not _NAME_RE.match(name):
        raise Unprocessable(
            "invalid mock name", errors=[{"pointer": "/path/name", "message": "1-64 of A-Z a-z 0-9 _ -"}]
        )
    return name


class MockController(Controller):
    path = "/api/whk/dev/mock"
    tags = ["development"]  # noqa: RUF012 - Litestar reads a class attribute
    dependencies = settings_dependency()

    def __init__(self, owner: Any) -> None:
        super().__init__(owner)
        self.queries = load_queries("api.devmock")

    @post(
        "/{name:str}",
        operation_id="mock_receive",
        summary="Receive a webhook (development): stores it and answers ?status after ?delay_ms",
        exclude_from_auth=True,
        status_code=200,
    )
    async def receive(
        self,
        request: Request[Any, Any, Any],
        state: State,
        settings: NamedDependency[SkipValidation[Settings]],
        name: MockName,
        status: Annotated[int, Parameter(ge=200, le=599, description="status to answer with")] = 200,
        delay_ms: Annotated[int, Parameter(ge=0, le=30000, description="wait before answering")] = 0,
    ) -> Response[Ack]:
        _checked(settings, name)
        body = await request.body()
        async with state.pool.connection() as conn:
            # Credentials are masked before they are stored, by the attempt log's rule (whk.redact),
            # including every header a webhook is configured to send its credential in.
            names = await fetch_value(conn, self.queries["credential_header_names"], {})
            headers = mask_headers(
                ((k.lower(), v) for k, v in request.headers.items()), credential_names=frozenset(names)
            )
            received = await fetch_value(
                conn,
                self.queries["record"],
                {
                    "name": name,
                    "method": request.method,
                    "headers": Jsonb(headers),
                    "body": body[:BODY_KEEP_BYTES].decode("utf-8", errors="replace"),
                    "body_size": len(body),
                    "status": status,
                },
            )
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        return Response(Ack(received=int(received), mock=name), status_code=status)

    @get(
        "/{name:str}",
        operation_id="mock_list",
        summary="What a mock endpoint received, newest first (admin)",
        guards=[admin_only],
    )
    async def received(
        self,
        conn: NamedDependency[AsyncConnection[Any]],
        settings: NamedDependency[SkipValidation[Settings]],
        name: MockName,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    ) -> list[Received]:
        _checked(settings, name)
        return await fetch_all(conn, self.queries["list_received"], {"name": name, "limit": limit}, Received)

    @delete(
        "/{name:str}",
        operation_id="mock_clear",
        summary="Forget what a mock endpoint received (admin)",
        guards=[admin_only],
        status_code=HTTP_204_NO_CONTENT,
    )
    async def clear(
        self,
        conn: NamedDependency[AsyncConnection[Any]],
        settings: NamedDependency[SkipValidation[Settings]],
        name: MockName,
    ) -> None:
        _checked(settings, name)
        await fetch_value(conn, self.queries["clear"], {"name": name})
