"""Dependencies every controller uses: the request's database connection and its ``Principal``.

Controllers declare them by name::

    @get("/{webhook_id:int}")
    async def get_webhook(
        self, conn: NamedDependency[AsyncConnection[Any]], principal: NamedDependency[Principal], ...
    ) -> Webhook: ...

``conn`` is a pooled connection inside ONE transaction for the whole request: it commits when the
handler returns normally (before the response is sent, so a failed commit is a 5xx, never a lying 2xx)
and rolls back when the handler raises. Audit rows written with ``AuditLog.record(conn, ...)`` therefore
commit or vanish together with the change they describe.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from api.errors import Forbidden, NotFound, Unauthorized

__all__ = [
    "ADMIN_SCOPE",
    "Principal",
    "admin_only",
    "dependencies",
    "provide_conn",
    "provide_principal",
    "require_own_consumer",
]

ADMIN_SCOPE = "admin"


class Principal(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Who is calling: an admin (``consumer_id is None``) or one consumer (the tenant).

    ``actor`` is what the audit trail records: ``apikey:<prefix>`` or ``jwt:<sub>``.
    ``scopes``: ``admin``, ``*`` (everything of the tenant) or ``<area>:read`` / ``<area>:write`` /
    ``<area>:*`` where area is the first path segment after ``/api/whk/`` (``webhooks``, ``deliveries``…).
    """

    actor: str
    consumer_id: int | None
    scopes: frozenset[str]
    request_id: str
    source_ip: str
    credential_id: int | None = None  # whk.api_keys.id for API keys, None for JWTs

    @property
    def is_admin(self) -> bool:
        return self.consumer_id is None and ADMIN_SCOPE in self.scopes

    def allows(self, scope: str) -> bool:
        """True when the principal holds ``scope`` (``area:read``/``area:write``) directly or by wildcard."""
        if ADMIN_SCOPE in self.scopes or "*" in self.scopes or scope in self.scopes:
            return True
        area, _, _ = scope.partition(":")
        return f"{area}:*" in self.scopes

    def tenant_filter(self) -> int | None:
        """The consumer id every resource query must filter on (None = admin, no filter)."""
        return None if self.is_admin else self.consumer_id


def require_own_consumer(principal: Principal, consumer_id: int | None) -> None:
    """The tenancy rule for a consumer id named in a query or a body (docs/api.md, Tenancy): another
    tenant is invisible to a consumer credential, so its id answers 404 exactly as in a path, never an
    empty list (an existence oracle of another kind) nor a 422. Admins may name any consumer."""
    tenant = principal.tenant_filter()
    if tenant is not None and consumer_id is not None and consumer_id != tenant:
        raise NotFound(f"consumer {consumer_id} not found")


async def provide_conn(state: State) -> AsyncIterator[AsyncConnection[Any]]:
    """A pooled connection with one transaction around the whole request."""
    pool: AsyncConnectionPool[Any] = state.pool
    async with pool.connection() as conn, conn.transaction():
        yield conn


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    user = request.scope.get("user")
    if not isinstance(user, Principal):
        # Only reachable from a handler excluded from auth that still asks for a principal.
        raise Unauthorized("credentials required")
    return user


def admin_only(connection: Any, _handler: Any) -> None:
    """Litestar guard: the route is for admins only (consumers get 403)."""
    user = connection.scope.get("user")
    if not isinstance(user, Principal) or not user.is_admin:
        raise Forbidden("this operation needs an admin credential")


def dependencies() -> dict[str, Provide]:
    return {
        "conn": Provide(provide_conn),
        "principal": Provide(provide_principal, sync_to_thread=False),
    }
