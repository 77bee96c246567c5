"""``/api/whk/dev/mock/{name}``: mock receivers for development (WHK_ENV=development only).

Point a webhook at ``http://127.0.0.1:8080/api/whk/dev/mock/orders`` (any method: POST, PUT, PATCH, DELETE,
GET) and every request is stored with its headers, body and signature verdict: whether it verified with the
secret of the webhook whose URL targets the mock, and why not. Credentials in the headers are masked before
they are stored, by the attempt log's rule (``whk.redact``).

What the mock answers is a scenario (``whk.mockscenario``, the pytest plugin's format), set with
``PUT /dev/mock/{name}/scenario``: ``{"steps": [503, 503, {"status": 200, "delay_ms": 300}]}``, random
failures with a seed, a body dripped slowly. It lives in the database, so every API worker plays the same
script. Without one, ``?status=`` and ``?delay_ms=`` on the webhook URL choose the answer.

Receiving takes no API credential (the dispatcher sends none); reading, clearing and scripting need an
admin. In production every route answers 404.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Final

import msgspec
from litestar import Controller, HttpMethod, Request, Response, delete, get, put, route
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter, PathParameter, SkipValidation
from litestar.response import Stream
from litestar.status_codes import HTTP_204_NO_CONTENT
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from api.context import settings_dependency
from api.deps import admin_only
from api.devmock.verdict import Verdict, judge
from api.errors import NotFound, Unprocessable
from api.rows import fetch_all, fetch_one, fetch_value
from whk.mockscenario import Reply, Scenario, Step, reply_for
from whk.redact import mask_headers
from whk.secretbox import SecretBox, SecretDecryptError, row_aad
from whk.settings import Settings
from whk.signing import SigningError, decode_secret
from whk.sqlfiles import load_queries

__all__ = ["MockController"]

BODY_KEEP_BYTES = 256 * 1024
NAME = r"^[A-Za-z0-9_-]{1,64}$"
_NAME_RE = re.compile(NAME)
MockName = Annotated[str, PathParameter(pattern=NAME, description="mock endpoint name")]
RECEIVE_METHODS: Final = (
    HttpMethod.GET,
    HttpMethod.POST,
    HttpMethod.PUT,
    HttpMethod.PATCH,
    HttpMethod.DELETE,
)
DRIP_PIECES: Final = 10
_NO_BODY: Final = frozenset({204, 304})


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
    webhook_id: Annotated[
        int | None, msgspec.Meta(description="the webhook targeting this mock whose secret was checked")
    ] = None
    signature_ok: Annotated[
        bool | None,
        msgspec.Meta(description="true: verified; false: did not (see signature_reason); null: no webhook"),
    ] = None
    signature_reason: str | None = None


class Ack(msgspec.Struct, frozen=True, kw_only=True):
    received: int
    mock: str
    request_number: Annotated[
        int | None, msgspec.Meta(description="0-based request number within the scenario (null: none set)")
    ] = None


class MockScenario(msgspec.Struct, frozen=True, kw_only=True):
    """A mock's scenario and how many requests it has answered since it was set."""

    scenario: Scenario
    served: int
    updated_at: datetime


class _ScenarioRow(msgspec.Struct, frozen=True, kw_only=True):
    step_status: list[int]
    step_delay_ms: list[int]
    step_drip_ms: list[int]
    then_status: int
    then_delay_ms: int
    then_drip_ms: int
    fail_rate: float
    fail_status: int
    seed: int
    served: int = 0
    n: int = 0
    updated_at: datetime | None = None


class _SecretRow(msgspec.Struct, frozen=True, kw_only=True):
    webhook_id: int
    secret_id: int | None
    secret_enc: bytes | None
    tolerance: int


def _step_out(status: int, delay_ms: int, drip_ms: int) -> int | Step:
    return (
        status if delay_ms == 0 and drip_ms == 0 else Step(status=status, delay_ms=delay_ms, drip_ms=drip_ms)
    )


def _scenario_of(row: _ScenarioRow) -> Scenario:
    return Scenario(
        steps=[
            _step_out(s, d, p)
            for s, d, p in zip(row.step_status, row.step_delay_ms, row.step_drip_ms, strict=True)
        ],
        then=_step_out(row.then_status, row.then_delay_ms, row.then_drip_ms),
        fail_rate=row.fail_rate,
        fail_status=row.fail_status,
        seed=row.seed,
    )


def _scenario_params(name: str, scenario: Scenario) -> dict[str, Any]:
    steps = [Step(status=s) if isinstance(s, int) else s for s in scenario.steps]
    then = Step(status=scenario.then) if isinstance(scenario.then, int) else scenario.then
    return {
        "name": name,
        "step_status": [s.status for s in steps],
        "step_delay_ms": [s.delay_ms for s in steps],
        "step_drip_ms": [s.drip_ms for s in steps],
        "then_status": then.status,
        "then_delay_ms": then.delay_ms,
        "then_drip_ms": then.drip_ms,
        "fail_rate": scenario.fail_rate,
        "fail_status": scenario.fail_status,
        "seed": scenario.seed,
    }


def _checked(settings: Settings, name: str) -> str:
    """404 outside development; 422 for a mock name that is not 1-64 of [A-Za-z0-9_-]."""
    if settings.core.environment != "development":
        raise NotFound("mock endpoints exist only when WHK_ENV=development")
    if not _NAME_RE.match(name):
        raise Unprocessable(
            "invalid mock name", errors=[{"pointer": "/path/name", "message": "1-64 of A-Z a-z 0-9 _ -"}]
        )
    return name


def _receive_operation_id(_handler: Any, method: Any, _path: Any) -> str:
    """``mock_receive_post``, ``mock_receive_put``…: one operation id per method, as OpenAPI requires."""
    return f"mock_receive_{getattr(method, 'value', method)}".lower()


async def _drip(payload: bytes, drip_ms: int) -> AsyncIterator[bytes]:
    size = max(1, -(-len(payload) // DRIP_PIECES))
    pieces = [payload[i : i + size] for i in range(0, len(payload), size)]
    for i, piece in enumerate(pieces):
        if i:
            await asyncio.sleep(drip_ms / 1000 / len(pieces))
        yield piece


class MockController(Controller):
    path = "/api/whk/dev/mock"
    tags = ["development"]  # noqa: RUF012 - Litestar reads a class attribute
    dependencies = settings_dependency()

    def __init__(self, owner: Any) -> None:
        super().__init__(owner)
        self.queries = load_queries("api.devmock")
        self._ack = msgspec.json.Encoder()

    async def _verdict(
        self,
        conn: AsyncConnection[Any],
        box: SecretBox,
        name: str,
        headers: dict[str, str],
        body: bytes,
    ) -> Verdict:
        rows = await fetch_all(conn, self.queries["signing_secrets"], {"name": name}, _SecretRow)
        keys: dict[int, list[bytes]] = {}
        problems: dict[int, str] = {}
        tolerance = 300
        for row in rows:
            tolerance = row.tolerance
            if row.secret_id is None or row.secret_enc is None:
                problems.setdefault(row.webhook_id, "it has no current signing secret")
                continue
            try:
                plain = box.decrypt(row.secret_enc, row_id=row_aad("webhook_secrets", row.secret_id))
                keys.setdefault(row.webhook_id, []).append(decode_secret(plain.decode()))
            except (SecretDecryptError, SigningError, UnicodeDecodeError) as exc:
                problems[row.webhook_id] = f"its signing secret cannot be read ({exc})"
        for webhook_id in keys:
            problems.pop(webhook_id, None)  # one readable secret is enough
        return judge(keys, problems, headers, body, now=int(time.time()), tolerance=tolerance)

    @route(
        "/{name:str}",
        http_method=list(RECEIVE_METHODS),
        operation_id=_receive_operation_id,
        summary="Receive a webhook (development): stores it with its signature verdict, answers by the "
        "mock's scenario (else ?status after ?delay_ms)",
        exclude_from_auth=True,
        status_code=200,
    )
    async def receive(
        self,
        request: Request[Any, Any, Any],
        state: State,
        settings: NamedDependency[SkipValidation[Settings]],
        secretbox: NamedDependency[SkipValidation[SecretBox]],
        name: MockName,
        status: Annotated[
            int, Parameter(ge=200, le=599, description="status to answer with (no scenario set)")
        ] = 200,
        delay_ms: Annotated[
            int, Parameter(ge=0, le=30000, description="wait before answering (no scenario set)")
        ] = 0,
    ) -> Response[Any]:
        _checked(settings, name)
        body = await request.body()
        raw_headers = {k.lower(): v for k, v in request.headers.items()}
        async with state.pool.connection() as conn:
            # Credentials are masked before they are stored, by the attempt log's rule (whk.redact),
            # including every header a webhook is configured to send its credential in.
            names = await fetch_value(conn, self.queries["credential_header_names"], {})
            headers = mask_headers(raw_headers.items(), credential_names=frozenset(names))
            verdict = await self._verdict(conn, secretbox, name, raw_headers, body)
            row = await fetch_one(conn, self.queries["take_reply"], {"name": name}, _ScenarioRow)
            reply = reply_for(_scenario_of(row), row.n) if row else Reply(status=status, delay_ms=delay_ms)
            received = await fetch_value(
                conn,
                self.queries["record"],
                {
                    "name": name,
                    "method": request.method,
                    "headers": Jsonb(headers),
                    "body": body[:BODY_KEEP_BYTES].decode("utf-8", errors="replace"),
                    "body_size": len(body),
                    "status": reply.status,
                    "webhook_id": verdict.webhook_id,
                    "signature_ok": verdict.ok,
                    "signature_reason": verdict.reason,
                },
            )
        if reply.delay_ms:
            await asyncio.sleep(reply.delay_ms / 1000)
        if reply.status in _NO_BODY:
            return Response(content=None, status_code=reply.status)
        ack = Ack(received=int(received), mock=name, request_number=row.n if row else None)
        if reply.drip_ms:
            payload = self._ack.encode(ack)
            return Stream(
                _drip(payload, reply.drip_ms),
                status_code=reply.status,
                media_type="application/json",
                headers={"content-length": str(len(payload))},
            )
        return Response(ack, status_code=reply.status)

    @get(
        "/{name:str}/requests",
        operation_id="mock_list",
        summary="What a mock endpoint received: newest first, or oldest first after ?after=ID (tail) (admin)",
        guards=[admin_only],
    )
    async def received(
        self,
        conn: NamedDependency[AsyncConnection[Any]],
        settings: NamedDependency[SkipValidation[Settings]],
        name: MockName,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
        after: Annotated[
            int | None,
            Parameter(
                ge=0, le=9223372036854775807, description="only requests with a larger id, oldest first"
            ),
        ] = None,
    ) -> list[Received]:
        _checked(settings, name)
        if after is None:
            return await fetch_all(
                conn, self.queries["list_received"], {"name": name, "limit": limit}, Received
            )
        return await fetch_all(
            conn,
            self.queries["list_received_after"],
            {"name": name, "after": after, "limit": limit},
            Received,
        )

    @delete(
        "/{name:str}/requests",
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

    @put(
        "/{name:str}/scenario",
        operation_id="mock_set_scenario",
        summary="Script what a mock endpoint answers; its request count restarts at 0 (admin)",
        guards=[admin_only],
    )
    async def set_scenario(
        self,
        conn: NamedDependency[AsyncConnection[Any]],
        settings: NamedDependency[SkipValidation[Settings]],
        name: MockName,
        data: JSONBody[Scenario],
    ) -> MockScenario:
        _checked(settings, name)
        row = await fetch_one(conn, self.queries["put_scenario"], _scenario_params(name, data), _ScenarioRow)
        assert row is not None
        assert row.updated_at is not None
        return MockScenario(scenario=_scenario_of(row), served=row.served, updated_at=row.updated_at)

    @get(
        "/{name:str}/scenario",
        operation_id="mock_get_scenario",
        summary="A mock endpoint's scenario and how far it has got (admin)",
        guards=[admin_only],
    )
    async def get_scenario(
        self,
        conn: NamedDependency[AsyncConnection[Any]],
        settings: NamedDependency[SkipValidation[Settings]],
        name: MockName,
    ) -> MockScenario:
        _checked(settings, name)
        row = await fetch_one(conn, self.queries["get_scenario"], {"name": name}, _ScenarioRow)
        if row is None or row.updated_at is None:
            raise NotFound(f"mock {name!r} has no scenario")
        return MockScenario(scenario=_scenario_of(row), served=row.served, updated_at=row.updated_at)

    @delete(
        "/{name:str}/scenario",
        operation_id="mock_delete_scenario",
        summary="Drop a mock endpoint's scenario: it answers ?status again (admin)",
        guards=[admin_only],
        status_code=HTTP_204_NO_CONTENT,
    )
    async def delete_scenario(
        self,
        conn: NamedDependency[AsyncConnection[Any]],
        settings: NamedDependency[SkipValidation[Settings]],
        name: MockName,
    ) -> None:
        _checked(settings, name)
        await fetch_value(conn, self.queries["delete_scenario"], {"name": name})
