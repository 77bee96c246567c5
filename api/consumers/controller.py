"""``/api/whk/consumers``: the tenants. Admins create, change and delete them; a consumer credential
reads its own row and may change its own contact details and preferences (another id is 404)."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT
from psycopg import AsyncConnection

from api.audit import AuditLog
from api.consumers.repository import ConsumerRepository
from api.consumers.schemas import (
    SELF_SERVICE,
    Consumer,
    ConsumerCreate,
    ConsumerPage,
    ConsumerUpdate,
    QuietHours,
)
from api.deps import Principal, admin_only
from api.errors import Conflict, Forbidden, NotFound, Unprocessable
from api.shapes import CursorQ, IdPath, LimitQ

__all__ = ["ConsumerController"]

Conn = NamedDependency[AsyncConnection[Any]]
Who = NamedDependency[Principal]


def _check_cidrs(values: list[str]) -> list[str]:
    """Normalised CIDRs, or 422 naming every bad entry."""
    errors: list[dict[str, str]] = []
    out: list[str] = []
    for i, value in enumerate(values):
        try:
            out.append(str(ipaddress.ip_network(value, strict=False)))
        except ValueError as exc:
            errors.append({"pointer": f"/allowed_ips/{i}", "message": str(exc)})
    if errors:
        raise Unprocessable("allowed_ips holds invalid networks", errors=errors)
    return out


async def _check_quiet_hours(
    conn: AsyncConnection[Any], repo: ConsumerRepository, quiet: QuietHours | None
) -> None:
    """422 naming the member the database refuses (an unknown time zone, a window that ends at its start)."""
    if quiet is None:
        return
    problem = await repo.quiet_hours_problem(conn, quiet)
    if problem is not None:
        member, _, message = problem.partition(": ")
        raise Unprocessable(
            f"quiet_hours{member}: {message}",
            errors=[{"pointer": f"/quiet_hours{member}", "message": message}],
        )


def _view(c: Consumer) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(c)
    out["consumer_id"] = c.id
    return out


class ConsumerController(Controller):
    path = "/api/whk/consumers"
    tags = ["consumers"]  # noqa: RUF012 - Litestar reads a class attribute

    def __init__(self, owner: Any) -> None:
        super().__init__(owner)
        self.repo = ConsumerRepository()
        self.audit_log = AuditLog()

    @get("/", operation_id="listConsumers", summary="List consumers (a consumer sees itself)")
    async def list_consumers(
        self,
        conn: Conn,
        principal: Who,
        status: Annotated[Literal["active", "suspended", "disabled"] | None, QueryParameter()] = None,
        name_prefix: Annotated[str | None, QueryParameter(max_length=200)] = None,
        sort: Annotated[
            Literal["id", "-id", "name", "-name", "created_at", "-created_at"], QueryParameter()
        ] = "id",
        cursor: CursorQ = None,
        limit: LimitQ = 50,
    ) -> ConsumerPage:
        items, nxt = await self.repo.listing.page(
            conn,
            tenant=principal.tenant_filter(),
            filters={"status": status, "name_prefix": name_prefix},
            sort=sort,
            cursor=cursor,
            limit=limit,
        )
        return ConsumerPage(items=items, next_cursor=nxt)

    @get("/{consumer_id:int}", operation_id="getConsumer", summary="Read one consumer")
    async def get_consumer(self, conn: Conn, principal: Who, consumer_id: IdPath) -> Consumer:
        found = await self.repo.get(conn, tenant=principal.tenant_filter(), consumer_id=consumer_id)
        if found is None:
            raise NotFound(f"consumer {consumer_id} not found")
        return found

    @post(
        "/",
        operation_id="createConsumer",
        summary="Create a consumer (admin)",
        guards=[admin_only],
        status_code=HTTP_201_CREATED,
    )
    async def create_consumer(self, conn: Conn, principal: Who, data: JSONBody[ConsumerCreate]) -> Consumer:
        data = msgspec.structs.replace(data, allowed_ips=_check_cidrs(data.allowed_ips))
        await _check_quiet_hours(conn, self.repo, data.quiet_hours)
        consumer_id = await self.repo.create(conn, data)
        created = await self.repo.get(conn, tenant=None, consumer_id=consumer_id)
        assert created is not None
        await self.audit_log.record(
            conn, principal, "consumer.create", "consumer", consumer_id, None, _view(created)
        )
        return created

    @put(
        "/{consumer_id:int}", operation_id="updateConsumer", summary="Change a consumer (fields present only)"
    )
    async def update_consumer(
        self, conn: Conn, principal: Who, consumer_id: IdPath, data: JSONBody[ConsumerUpdate]
    ) -> Consumer:
        before = await self.repo.get(
            conn, tenant=principal.tenant_filter(), consumer_id=consumer_id, lock=True
        )
        if before is None:
            raise NotFound(f"consumer {consumer_id} not found")
        if not principal.is_admin:
            given = {f for f in ConsumerUpdate.__struct_fields__ if getattr(data, f) is not msgspec.UNSET}
            refused = sorted(given - SELF_SERVICE)
            if refused:
                raise Forbidden(f"only an admin may change {', '.join(refused)}")
        if data.allowed_ips is not msgspec.UNSET:
            data = msgspec.structs.replace(data, allowed_ips=_check_cidrs(list(data.allowed_ips)))
        if data.quiet_hours is not msgspec.UNSET:
            await _check_quiet_hours(conn, self.repo, data.quiet_hours)
        await self.repo.update(conn, consumer_id, data)
        after = await self.repo.get(conn, tenant=None, consumer_id=consumer_id)
        assert after is not None
        await self.audit_log.record(
            conn, principal, "consumer.update", "consumer", consumer_id, _view(before), _view(after)
        )
        return after

    @delete(
        "/{consumer_id:int}",
        operation_id="deleteConsumer",
        summary="Delete a consumer nothing refers to (admin); otherwise disable it",
        guards=[admin_only],
        status_code=HTTP_204_NO_CONTENT,
    )
    async def delete_consumer(self, conn: Conn, principal: Who, consumer_id: IdPath) -> None:
        before = await self.repo.get(conn, tenant=None, consumer_id=consumer_id, lock=True)
        if before is None:
            raise NotFound(f"consumer {consumer_id} not found")
        if await self.repo.references(conn, consumer_id):
            raise Conflict("the consumer still owns webhooks or deliveries; set status to disabled instead")
        await self.repo.delete(conn, consumer_id)
        await self.audit_log.record(
            conn, principal, "consumer.delete", "consumer", consumer_id, _view(before), None
        )
