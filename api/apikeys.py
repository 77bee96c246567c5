"""``/api/whk/api-keys``: issue (plaintext shown once), list and revoke API keys.

Admins manage every key and may issue admin keys (``consumer_id`` omitted); a consumer manages only its
own keys, with scopes it holds itself. Revocation is effective from the next request (no cache).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter
from psycopg import AsyncConnection

from api import keys
from api.deps import Principal, require_own_consumer
from api.errors import Forbidden, Unprocessable
from api.openapi import problem_responses
from api.shapes import IdPath, Timestamp

__all__ = ["ApiKeyController", "ApiKeyCreate", "ApiKeyCreated"]


class ApiKeyCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A new API key. Omit ``consumer_id`` for an admin key (admins only)."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200, examples=["billing integration"])]
    consumer_id: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)] | None = None
    scopes: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=64)]],
        msgspec.Meta(max_length=32, examples=[["webhooks:read", "deliveries:*"]]),
    ] = msgspec.field(default_factory=list)
    expires_at: Timestamp | None = None


class ApiKeyCreated(msgspec.Struct, frozen=True, kw_only=True):
    """The created key; ``key`` is shown this once and never again."""

    key: str
    api_key: keys.ApiKey


class ApiKeyController(Controller):
    path = "/api/whk/api-keys"
    tags = ["api-keys"]  # noqa: RUF012 - Litestar reads a class attribute

    def __init__(self, owner: Any) -> None:
        super().__init__(owner)
        self.keys = keys.ApiKeyStore()

    @post(
        "/",
        operation_id="createApiKey",
        summary="Issue an API key (plaintext returned once)",
        responses=problem_responses(400, 401, 403, 404, 422, 429),
    )
    async def create_key(
        self,
        conn: NamedDependency[AsyncConnection[Any]],
        principal: NamedDependency[Principal],
        data: JSONBody[ApiKeyCreate],
    ) -> ApiKeyCreated:
        if data.consumer_id is None and not principal.is_admin:
            # no consumer_id asks for an admin key: more privilege than a consumer credential holds
            raise Forbidden("only an admin credential may issue an admin key (give your consumer_id)")
        if data.consumer_id is None and data.scopes:
            raise Unprocessable(
                "admin keys carry the admin scope only",
                errors=[{"pointer": "/scopes", "message": "must be empty for an admin key"}],
            )
        created, plaintext = await self.keys.acreate(
            conn,
            principal,
            consumer_id=data.consumer_id,
            name=data.name,
            scopes=data.scopes,
            expires_at=data.expires_at,
        )
        return ApiKeyCreated(key=plaintext, api_key=created)

    @get(
        "/",
        operation_id="listApiKeys",
        summary="List API keys (never their secrets)",
        responses=problem_responses(400, 401, 403, 429),
    )
    async def list_keys(
        self,
        conn: NamedDependency[AsyncConnection[Any]],
        principal: NamedDependency[Principal],
        consumer_id: Annotated[int | None, QueryParameter(name="consumer_id", ge=1, le=2**63 - 1)] = None,
        include_revoked: Annotated[bool, QueryParameter(name="include_revoked")] = False,
        after_id: Annotated[
            int | None, QueryParameter(name="after_id", ge=0, le=2**63 - 1, description="keyset cursor")
        ] = None,
        limit: Annotated[int, QueryParameter(name="limit", ge=1, le=500)] = 50,
    ) -> list[keys.ApiKey]:
        require_own_consumer(principal, consumer_id)
        return await self.keys.page(
            conn,
            principal,
            consumer_id=consumer_id,
            include_revoked=include_revoked,
            after_id=after_id,
            limit=limit,
        )

    @delete(
        "/{key_id:int}",
        operation_id="revokeApiKey",
        summary="Revoke an API key (effective from the next request)",
        status_code=200,
        responses=problem_responses(401, 403, 404, 409, 429),
        response_description="The revoked key",
    )
    async def revoke(
        self,
        conn: NamedDependency[AsyncConnection[Any]],
        principal: NamedDependency[Principal],
        key_id: IdPath,
    ) -> keys.ApiKey:
        return await self.keys.revoke(conn, principal, key_id)
