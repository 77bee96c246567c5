"""App factory behaviour: problem+json for every error, body limit, start-up refusals, OpenAPI."""

from typing import Any

import psycopg
import pytest
from litestar import get, post
from litestar.datastructures import State
from litestar.params import JSONBody
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.errors import Conflict, Unprocessable
from tests.support.api_platform import PROBLEM, admin_key, bearer, client, make_consumer, settings_for
from whk.errors import SchemaVersionMismatch
from whk.secretbox import SecretKeyMissing

pytestmark = pytest.mark.db


@get("/api/whk/test/boom", operation_id="testBoom", sync_to_thread=False)
def boom() -> None:
    raise RuntimeError("secret internals: SELECT * FROM whk.api_keys")


@get("/api/whk/test/db-unique", operation_id="testDbUnique")
async def db_unique(state: State) -> None:
    async with state.pool.connection() as conn:
        await conn.execute("INSERT INTO whk.whk_04_assinantes (name) VALUES ('dup')")
        await conn.execute("INSERT INTO whk.whk_04_assinantes (name) VALUES ('dup')")


@get("/api/whk/test/db-syntax", operation_id="testDbSyntax")
async def db_syntax(state: State) -> None:
    async with state.pool.connection() as conn:
        await conn.execute("SELEC broken")


@get("/api/whk/test/conflict", operation_id="testConflict", sync_to_thread=False)
def conflict() -> None:
    raise Conflict("already there")


@get("/api/whk/test/unprocessable", operation_id="testUnprocessable", sync_to_thread=False)
def unprocessable() -> None:
    raise Unprocessable("bad url", errors=[{"pointer": "/url", "message": "loopback address refused"}])


@post("/api/whk/test/echo", operation_id="testEcho", sync_to_thread=False)
def echo(data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
    return {"size": len(str(data))}


HANDLERS = [boom, db_unique, db_syntax, conflict, unprocessable, echo]


def problem(r, status):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status
    assert body["title"]
    assert body["type"].startswith("urn:whk:problem:")
    for leak in ("Traceback", "SELECT", "whk.api_keys", "secret internals", "psycopg", "SELEC"):
        assert leak not in r.text
    return body


async def test_every_error_is_problem_json(settings, conn):
    key = admin_key(conn)
    h = bearer(key)
    async with client(settings, *HANDLERS) as c:
        problem(await c.get("/no/such/route"), 404)
        problem(await c.delete("/api/whk/test/boom", headers=h), 405)
        body = problem(await c.get("/api/whk/test/boom", headers=h), 500)
        assert body["request_id"]
        assert problem(await c.get("/api/whk/test/db-unique", headers=h), 409)["constraint"] == (
            "whk_04_assinantes_name_key"
        )
        problem(await c.get("/api/whk/test/db-syntax", headers=h), 500)
        problem(await c.get("/api/whk/test/conflict", headers=h), 409)
        body = problem(await c.get("/api/whk/test/unprocessable", headers=h), 422)
        assert body["errors"] == [{"pointer": "/url", "message": "loopback address refused"}]
        problem(await c.post("/api/whk/test/echo", headers=h, content=b"{not json"), 400)
        problem(await c.get("/api/whk/api-keys?limit=0", headers=h), 400)
        problem(await c.get("/api/whk/api-keys?limit=abc", headers=h), 400)
        problem(await c.delete("/api/whk/api-keys/0", headers=h), 400)
        body = problem(await c.post("/api/whk/api-keys", headers=h, json={"name": ""}), 400)
        assert body["errors"][0]["pointer"] == "/name"
        body = problem(await c.post("/api/whk/api-keys", headers=h, json={"name": "x", "extra": 1}), 400)
        assert body["errors"] == [{"pointer": "/extra", "message": "Object contains unknown field `extra`"}]


async def test_body_size_limit_is_413(db_url, conn):
    key = admin_key(conn)
    settings = settings_for(db_url, WHK_API_MAX_BODY_BYTES="1000")
    async with client(settings, *HANDLERS) as c:
        ok = await c.post("/api/whk/test/echo", headers=bearer(key), json={"a": "x" * 500})
        assert ok.status_code == 201
        problem(await c.post("/api/whk/test/echo", headers=bearer(key), json={"a": "x" * 2000}), 413)


async def test_request_id_is_echoed_or_generated(settings, conn):
    key = admin_key(conn)
    async with client(settings) as c:
        r = await c.get("/api/whk/api-keys", headers={**bearer(key), "X-Request-ID": "abc-1"})
        assert r.headers["x-request-id"] == "abc-1"
        r = await c.get("/api/whk/api-keys", headers={**bearer(key), "X-Request-ID": "bad id\twith spaces"})
        assert r.headers["x-request-id"] != "bad id\twith spaces"
        assert len(r.headers["x-request-id"]) == 32


async def _start(settings):
    async with AsyncTestClient(create_app(settings)):
        pass


def _raised(excinfo, kind) -> bool:
    if isinstance(excinfo.value, BaseExceptionGroup):
        return excinfo.group_contains(kind, depth=None)
    return isinstance(excinfo.value, kind)


async def test_refuses_to_start_on_another_schema_version(settings, conn):
    latest = conn.execute("SELECT max(version) FROM whk.schema_migrations").fetchone()[0]
    conn.execute("DELETE FROM whk.schema_migrations WHERE version = %s", (latest,))
    with pytest.raises(BaseException) as older:
        await _start(settings)
    assert _raised(older, SchemaVersionMismatch)
    conn.execute(
        "INSERT INTO whk.schema_migrations (version, name) VALUES (%s, 'x'), (%s, 'future')",
        (latest, latest + 1),
    )
    with pytest.raises(BaseException) as newer:
        await _start(settings)
    assert _raised(newer, SchemaVersionMismatch)


def test_production_refuses_to_build_without_secret_keys(db_url):
    with pytest.raises(SecretKeyMissing):
        create_app(settings_for(db_url, WHK_ENV="production", WHK_ALLOW_PRIVATE_CIDRS=""))


async def test_openapi_document(settings):
    async with client(settings) as c:
        doc = (await c.get("/schema/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    ops = [
        (path, m, op) for path, item in doc["paths"].items() for m, op in item.items() if isinstance(op, dict)
    ]
    assert ops
    ids = [op["operationId"] for _, _, op in ops]
    assert len(ids) == len(set(ids))
    assert {"bearer", "apiKey"} <= set(doc["components"]["securitySchemes"])
    create = doc["paths"]["/api/whk/api-keys"]["post"]
    assert create["operationId"] == "createApiKey"
    assert create["responses"]["422"]["content"][PROBLEM]
    schema_ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    props = doc["components"]["schemas"][schema_ref]["properties"]
    assert props["name"]["examples"]


async def test_pool_is_closed_after_shutdown_only_when_owned(settings):
    from whk.db import open_pool

    pool = await open_pool(settings)
    try:
        async with AsyncTestClient(create_app(settings, pool=pool)):
            pass
        async with pool.connection() as conn:
            assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)
    finally:
        await pool.close()


def test_psycopg_is_the_driver():
    assert psycopg.__version__.startswith("3.")


def test_main_exits_nonzero_on_wrong_schema(db_url, conn):
    from api.main import main
    from tests.support.api_platform import free_port

    conn.execute("INSERT INTO whk.schema_migrations (version, name) VALUES (999, 'future')")
    settings = settings_for(db_url, WHK_API_PORT=str(free_port()), WHK_LOG_LEVEL="ERROR")
    assert main(settings) != 0  # uvicorn: 3 = start-up failure


async def test_unknown_query_parameters_are_refused(settings, conn):
    key = admin_key(conn)
    async with client(settings) as c:
        assert (
            await c.get("/api/whk/api-keys?limit=5&include_revoked=true", headers=bearer(key))
        ).status_code == 200
        body = problem(await c.get("/api/whk/api-keys?limit=5&stauts=dead&zz=1", headers=bearer(key)), 400)
        assert body["errors"] == [
            {"pointer": "/query/stauts", "message": "unknown parameter"},
            {"pointer": "/query/zz", "message": "unknown parameter"},
        ]
        assert "stauts" in body["detail"]
        # Path parameters are not query parameters: the template is matched, not the raw path.
        r = await c.delete("/api/whk/api-keys/424242?x=1", headers=bearer(key))
        assert problem(r, 400)["errors"][0]["pointer"] == "/query/x"


async def test_query_values_must_fit_the_documented_schema(settings, conn):
    key = admin_key(conn)
    async with client(settings) as c:
        for bad in ("0", "-1", "501", "abc", "1.5", ""):
            body = problem(await c.get(f"/api/whk/api-keys?limit={bad}", headers=bearer(key)), 400)
            assert body["errors"][0]["pointer"] == "/query/limit", bad
        assert (await c.get("/api/whk/api-keys?limit=500&after_id=0", headers=bearer(key))).status_code == 200
        assert (
            await c.get("/api/whk/api-keys?include_revoked=false", headers=bearer(key))
        ).status_code == 200


def test_query_contract_readings():
    from api.contract import QueryContract, query_contracts

    doc = {
        "components": {"schemas": {"Status": {"type": "string", "enum": ["dead", "pending"]}}},
        "paths": {
            "/x": {
                "get": {
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 9},
                        },
                        {"name": "status", "in": "query", "schema": {"$ref": "#/components/schemas/Status"}},
                        {
                            "name": "flag",
                            "in": "query",
                            "schema": {"oneOf": [{"type": "boolean"}, {"type": "null"}]},
                        },
                        {
                            "name": "ids",
                            "in": "query",
                            "schema": {"type": "array", "items": {"type": "integer"}},
                        },
                        {"name": "id", "in": "path", "schema": {"type": "integer"}},
                    ]
                }
            }
        },
    }
    contract: QueryContract = query_contracts(doc)[("/x", "GET")]
    assert contract.names == {"limit", "status", "flag", "ids"}
    assert contract.problems({"limit": ["3"], "status": ["dead"], "flag": ["true"], "ids": ["1", "x"]}) == []
    bad = contract.problems({"limit": ["0"], "status": ["alive"], "flag": ["maybe"], "id": ["1"]})
    assert [e["pointer"] for e in bad] == ["/query/flag", "/query/id", "/query/limit", "/query/status"]


async def test_the_document_tells_what_a_body_must_be(settings):
    """Component schemas are msgspec's own: closed objects, item patterns, bounds, key patterns;
    ids are bounded by the exact bigint ceiling (not its float, one past it)."""
    async with client(settings) as c:
        doc = (await c.get("/schema/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    create = schemas["WebhookCreate"]
    assert create["additionalProperties"] is False
    assert create["properties"]["event_types"]["items"]["pattern"].startswith("^(")
    assert create["properties"]["headers"]["propertyNames"]["pattern"]
    rate = next(s for s in create["properties"]["rate_limit_per_second"]["anyOf"] if s.get("type"))
    assert (rate["minimum"], rate["maximum"]) == (0.001, 1_000_000)  # a floor: nothing underflows
    assert schemas["ApiKeyCreate"]["properties"]["expires_at"]["anyOf"][0]["format"] == "date-time"
    params = {p["name"]: p for p in doc["paths"]["/api/whk/webhooks/{webhook_id}"]["get"]["parameters"]}
    assert params["webhook_id"]["schema"]["maximum"] == 2**63 - 1
    assert isinstance(params["webhook_id"]["schema"]["maximum"], int)
    channel = schemas["AlertCreate"]["properties"]["channels"]["items"]
    assert {"$ref": "#/components/schemas/EmailChannel"} in channel["anyOf"]


async def test_bodies_are_held_to_the_document(settings, conn):
    """Litestar converts bodies leniently; what the document refuses is refused (400, pointer to the field),
    what it accepts is accepted (a JSON integer may be written 5.0)."""
    key = admin_key(conn)
    cid = make_consumer(conn, "contract")
    base = {"name": "h", "url": "http://127.0.0.1:9/h", "event_types": ["order.created"], "consumer_id": cid}
    async with client(settings) as c:
        for field, value in (
            ("batch_size", "5"),
            ("require_ack", "true"),
            ("event_types", ["order.created\n"]),
        ):
            r = await c.post("/api/whk/webhooks", headers=bearer(key), json={**base, field: value})
            assert problem(r, 400)["errors"][0]["pointer"].startswith(f"/{field}"), (field, r.text)
        r = await c.post("/api/whk/api-keys", headers=bearer(key), json={"name": "k", "expires_at": 0})
        assert problem(r, 400)["errors"][0]["pointer"] == "/expires_at"
        naive = {"name": "k", "consumer_id": cid, "expires_at": "2030-01-01T00:00:00"}
        assert problem(await c.post("/api/whk/api-keys", headers=bearer(key), json=naive), 400)
        r = await c.post("/api/whk/webhooks", headers=bearer(key), json={**base, "batch_size": 5.0})
        assert r.status_code == 201, r.text
        assert r.json()["webhook"]["batch_size"] == 5
        body = problem(await c.post("/api/whk/webhooks", headers=bearer(key), content=b"{no"), 400)
        assert body["detail"] == "the body is not valid JSON"


async def test_query_formats_are_checked(settings, conn):
    key = admin_key(conn)
    async with client(settings) as c:
        body = problem(await c.get("/api/whk/security/audit?until=0.5", headers=bearer(key)), 400)
        assert body["errors"][0]["pointer"] == "/query/until"
        ok = await c.get("/api/whk/security/audit?until=2030-01-01T00:00:00Z", headers=bearer(key))
        assert ok.status_code == 200


async def test_options_and_405_list_every_method_of_the_path(settings, conn):
    key = admin_key(conn)
    async with client(settings) as c:
        for path, methods in (
            ("/api/whk/webhooks", "GET, OPTIONS, POST"),
            ("/api/whk/webhooks/1", "DELETE, GET, OPTIONS, PUT"),
            ("/api/whk/consumers/1", "DELETE, GET, OPTIONS, PUT"),
        ):
            r = await c.options(path, headers=bearer(key))
            assert (r.status_code, r.headers["allow"]) == (204, methods), path
            r = await c.patch(path, headers=bearer(key))
            assert problem(r, 405)
            assert set(r.headers["allow"].split(", ")) == set(methods.split(", "))


async def test_docs_off_still_enforces_the_contract(db_url, conn):
    key = admin_key(conn)
    async with client(settings_for(db_url, WHK_API_DOCS="false")) as c:
        assert (await c.get("/schema/openapi.json")).status_code == 404
        problem(await c.get("/schema", headers=bearer(key)), 404)
        body = problem(await c.get("/api/whk/api-keys?stauts=dead", headers=bearer(key)), 400)
        assert body["errors"] == [{"pointer": "/query/stauts", "message": "unknown parameter"}]
