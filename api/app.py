"""The API's composition root: ``create_app(settings, *, pool=None) -> Litestar``.

* lifespan: opens a psycopg ``AsyncConnectionPool`` (msgspec JSON adapters; ``SET ROLE`` to
  WHK_API_DB_ROLE through the startup options when set) unless a pool is passed in, and refuses to start
  when the database schema is older or newer than this code (``SchemaVersionMismatch``) or, in
  production, when it is connected as a superuser or the owner of WHK's tables (``whk.dbroles``);
* refuses to build without a secret key in production (``SecretKeyMissing``) or with a half-configured
  JWT set-up (``SettingsError``);
* every route authenticated (``api.auth``) except health and the docs; every error problem+json
  (``api.errors``); bodies above WHK_API_MAX_BODY_BYTES → 413; OpenAPI 3.1 at ``/schema/openapi.json``
  with a docs UI at ``/schema`` (Scalar) and ``/schema/swagger``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.types import ControllerRouterHandler
from psycopg_pool import AsyncConnectionPool

from api.auth import PUBLIC_PATHS, AuthConfig, AuthMiddleware, RequestIdMiddleware
from api.contract import OptionsMiddleware, RequestContract
from api.crypto import provide_secretbox
from api.dashboard import dashboard_handlers, template_config
from api.dashboard.data import DashboardData
from api.deps import dependencies
from api.errors import exception_handlers
from api.openapi import (
    complete_error_responses,
    exact_parameter_bounds,
    openapi_config,
    struct_components,
    wire_structs,
)
from api.routes import route_handlers
from whk import db, dbroles
from whk.secretbox import SecretBox
from whk.settings import Settings

__all__ = ["complete_document", "create_app", "open_api_pool"]

log = logging.getLogger("whk.api")
API_VERSION = "1.0.0"


def complete_document(app: Litestar) -> None:
    """Finish the app's OpenAPI document (msgspec's schemas, exact parameter bounds, the platform's
    error answers): what ``/schema/openapi.json`` serves and ``api.reference`` renders into the docs."""
    struct_components(app.openapi_schema, wire_structs(app))
    exact_parameter_bounds(app.openapi_schema, app)
    complete_error_responses(app.openapi_schema, public_paths=PUBLIC_PATHS)


async def open_api_pool(settings: Settings) -> AsyncConnectionPool[Any]:
    """The API's connection pool: its least-privilege role, and the audit marker (the API audits its own
    changes in api.audit, so the SQL audit trigger skips them)."""
    pool_settings = dbroles.with_audit_marker(dbroles.with_role(settings, settings.api.db_role), "api")
    return await db.open_pool(pool_settings, name="whk-api")


def create_app(
    settings: Settings,
    *,
    pool: AsyncConnectionPool[Any] | None = None,
    extra_route_handlers: Sequence[ControllerRouterHandler] = (),
    resource_routes: bool = True,
) -> Litestar:
    """Build the API. ``pool``: use this (already open) pool and leave it open at shutdown (tests,
    benchmarks); ``extra_route_handlers``: additional handlers and ``resource_routes=False``: leave out
    the controllers of ``api.routes`` (tests of the platform itself)."""
    secretbox = SecretBox.from_settings(settings)
    auth = AuthConfig.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        own = pool is None
        active = await open_api_pool(settings) if pool is None else pool
        try:
            async with active.connection() as conn:
                await db.acheck_schema_version(conn)
                await dbroles.acheck_role(conn, settings, "api", log)
            app.state.pool = active
            yield
        finally:
            if own:
                await active.close()

    def document_and_contract(app: Litestar) -> None:
        # The document is built even when WHK_API_DOCS=false (then not served): it is the contract.
        complete_document(app)
        app.state.contract = RequestContract.from_app(app)

    async def enforce_contract(request: Request[Any, Any, Any]) -> None:
        """Query parameters must be declared (``?stauts=dead`` is a 400, not an unfiltered list) and fit
        their documented schema; bodies must decode strictly into their Struct (``api.contract``)."""
        contract: RequestContract | None = request.app.state.get("contract")
        if contract is not None:
            await contract.enforce(request)

    return Litestar(
        on_startup=[document_and_contract],
        before_request=enforce_contract,
        route_handlers=[
            *(route_handlers() if resource_routes else ()),
            *(dashboard_handlers() if resource_routes else ()),
            *extra_route_handlers,
        ],
        lifespan=[lifespan],
        state=State(
            {"auth": auth, "secretbox": secretbox, "settings": settings, "dashboard_data": DashboardData()}
        ),
        template_config=template_config(),
        dependencies={**dependencies(), "secretbox": Provide(provide_secretbox, sync_to_thread=False)},
        middleware=[RequestIdMiddleware, DefineMiddleware(AuthMiddleware), OptionsMiddleware],
        exception_handlers=exception_handlers(),
        request_max_body_size=settings.api.max_body_bytes,
        openapi_config=openapi_config(version=API_VERSION, enabled=settings.api.docs_enabled),
        debug=False,
        # Logging is configured once by the composition root (whk.logs): Litestar adds no handler of its own.
        logging_config=None,
    )
