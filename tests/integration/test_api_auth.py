"""Auth matrix through the real app: API keys, JWTs, exclusions, scopes, tenancy of keys."""

from collections.abc import AsyncIterator

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.support import jwt_keys as jk
from tests.support.api_platform import (
    LOOKALIKE_HANDLERS,
    PROBLEM,
    admin_key,
    bearer,
    client,
    consumer_key,
    make_consumer,
    secret_part,
    settings_for,
)

pytestmark = pytest.mark.db


JWT_ENV = {"WHK_JWT_SECRET": jk.HS_SECRET, "WHK_JWT_ISSUER": jk.ISSUER, "WHK_JWT_LEEWAY": "0"}


@pytest.fixture
def jwt_settings(db_url):
    return settings_for(db_url, **JWT_ENV)


# The parametrised cases below only send requests that the API refuses or cannot route: they write
# nothing. Their cases share one database and one app per test function (module scope) instead of
# each paying for its own (an app costs ~1 s of CPU to build and start); every case still sends its
# own request and checks its own answer.


@pytest.fixture(scope="module")
def shared_admin_key(module_db_url: str) -> str:
    with psycopg.connect(module_db_url, autocommit=True) as conn:
        return admin_key(conn)


@pytest.fixture(scope="module")
async def lookalike_client(module_db_url: str) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with client(settings_for(module_db_url), *LOOKALIKE_HANDLERS, resource_routes=False) as c:
        yield c


@pytest.fixture(scope="module")
async def real_routes_client(module_db_url: str) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with client(settings_for(module_db_url)) as c:
        yield c


@pytest.fixture(scope="module")
async def jwt_client(module_db_url: str) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """JWT settings, and consumer 1 exists: the tokens of the matrix name it, so each is refused for
    its own flaw, not for an unknown consumer."""
    with psycopg.connect(module_db_url, autocommit=True) as conn:
        assert make_consumer(conn, "acme-jwt") == 1
    async with client(settings_for(module_db_url, **JWT_ENV)) as c:
        yield c


def assert_problem(r, status):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:whk:problem:")
    assert "Traceback" not in r.text
    assert "SELECT" not in r.text
    return body


async def test_missing_and_malformed_credentials(settings):
    async with client(settings) as c:
        for headers in [{}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}, {"X-API-Key": ""}]:
            r = await c.get("/api/whk/api-keys", headers=headers)
            body = assert_problem(r, 401)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert body["request_id"]
        for token in [
            "whk_short",
            "whk_abcdefghijkl_",
            "whk_ABCDEFGHIJKL_xyz",
            "whk_abcdefghijkl_wrongsecret",
        ]:
            assert_problem(await c.get("/api/whk/api-keys", headers=bearer(token)), 401)


async def test_api_key_in_either_header(settings, conn):
    key = admin_key(conn)
    async with client(settings) as c:
        assert (await c.get("/api/whk/api-keys", headers=bearer(key))).status_code == 200
        assert (await c.get("/api/whk/api-keys", headers={"X-API-Key": key})).status_code == 200
        # Right prefix, wrong secret.
        assert_problem(await c.get("/api/whk/api-keys", headers=bearer(key[:-4] + "AAAA")), 401)


async def test_revoked_key_is_refused_from_the_next_request(settings, conn):
    admin = admin_key(conn)
    cid = make_consumer(conn, "acme")
    key = consumer_key(conn, cid)
    async with client(settings) as c:
        listed = (await c.get("/api/whk/api-keys", headers=bearer(key))).json()
        assert [k["consumer_id"] for k in listed] == [cid]
        r = await c.delete(f"/api/whk/api-keys/{listed[0]['id']}", headers=bearer(admin))
        assert r.status_code == 200
        assert r.json()["revoked_at"]
        body = assert_problem(await c.get("/api/whk/api-keys", headers=bearer(key)), 401)
        assert "revoked" in body["detail"]


async def test_expired_key_is_refused(settings, conn):
    cid = make_consumer(conn, "acme")
    key = consumer_key(conn, cid)
    conn.execute("UPDATE whk.api_keys SET expires_at = now() - interval '1 second'")
    async with client(settings) as c:
        assert (
            "expired" in assert_problem(await c.get("/api/whk/api-keys", headers=bearer(key)), 401)["detail"]
        )


async def test_suspended_consumer_is_forbidden(settings, conn):
    cid = make_consumer(conn, "acme", status="suspended")
    key = consumer_key(conn, cid)
    async with client(settings) as c:
        assert_problem(await c.get("/api/whk/api-keys", headers=bearer(key)), 403)


LOOKALIKES = [
    "/api/whk/monitoring/healthz",
    "/api/whk/monitoring/health/x",
    "/api/whk/monitoring/health.json",
    "/x/api/whk/monitoring/health",
    "/api/whk/monitoring/healt",
    "/api/whk/webhooks/monitoring/health",
    "/api/whk/monitoring/health%2F..%2Fapi-keys",
    "/api/whk/webhooks/schema/openapi.json",
    "/api/whk/schema",
    "/schemas/openapi.json",
    "/schema/openapi.json/x",
    "/schema/x/../../api/whk/api-keys",
    "/xschema/openapi.json",
]


@pytest.mark.parametrize("path", LOOKALIKES)
async def test_lookalike_paths_stay_protected(lookalike_client, shared_admin_key, path):
    c = lookalike_client
    r = await c.get(path)
    # /schema/... is the docs router's: paths it does not serve are unrouted (404, no handler ran).
    assert r.status_code == 401 or (path.startswith("/schema/") and r.status_code == 404), r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    # The test is meaningful: with credentials the same path reaches a handler.
    authed = await c.get(path, headers=bearer(shared_admin_key))
    assert authed.status_code in (200, 404), authed.text
    assert "reached" in authed.text or path.startswith("/schema/")


@pytest.mark.parametrize("path", LOOKALIKES)
async def test_lookalike_paths_with_the_real_routes(real_routes_client, path):
    r = await real_routes_client.get(path)
    assert r.status_code in (401, 404), (path, r.status_code, r.text)
    assert r.headers["content-type"].startswith(PROBLEM)


async def test_health_and_docs_are_public(settings):
    async with client(settings, *LOOKALIKE_HANDLERS, resource_routes=False) as c:
        assert (await c.get("/api/whk/monitoring/health")).status_code == 200
    async with client(settings) as c:
        r = await c.get("/schema/openapi.json")
        assert r.status_code == 200
        assert r.json()["openapi"].startswith("3.1")
        assert (await c.get("/schema")).status_code == 200
        assert (await c.get("/schema/swagger")).status_code == 200
        health = await c.get("/api/whk/monitoring/health")
        assert health.status_code != 401


async def test_jwt_tenant_and_admin(jwt_settings, conn):
    cid = make_consumer(conn, "acme")
    consumer_key(conn, cid)
    async with client(jwt_settings) as c:
        r = await c.get("/api/whk/api-keys", headers=bearer(jk.hs_token(whk_consumer=cid)))
        assert r.status_code == 200
        assert len(r.json()) == 1
        r = await c.get("/api/whk/api-keys", headers=bearer(jk.hs_token(scope="whk:admin")))
        assert r.status_code == 200


async def test_jwt_for_unknown_consumer_is_refused(jwt_settings):
    async with client(jwt_settings) as c:
        assert_problem(await c.get("/api/whk/api-keys", headers=bearer(jk.hs_token(whk_consumer=999))), 401)


@pytest.mark.parametrize(
    "case", sorted(k for k in __import__("tests.unit.test_jwtauth", fromlist=["MATRIX"]).MATRIX)
)
async def test_jwt_matrix_is_401(jwt_client, case):
    from tests.unit.test_jwtauth import MATRIX

    assert_problem(await jwt_client.get("/api/whk/api-keys", headers=bearer(MATRIX[case])), 401)


async def test_jwt_algorithm_swap_through_http(db_url, conn, tmp_path):
    private, public = jk.rsa_pair()
    settings = settings_for(
        db_url,
        WHK_JWT_ALGORITHM="RS256",
        WHK_JWT_PUBLIC_KEY_FILE=str(jk.write_public(tmp_path, public)),
        WHK_JWT_ISSUER=jk.ISSUER,
    )
    cid = make_consumer(conn, "acme")
    async with client(settings) as c:
        ok = await c.get("/api/whk/api-keys", headers=bearer(jk.rs_token(private, whk_consumer=cid)))
        assert ok.status_code == 200
        for token in [
            jk.hs_forged_with(public, whk_consumer=cid, scope="whk:admin"),
            jk.hs_token(whk_consumer=cid),
            jk.none_token(whk_consumer=cid),
        ]:
            assert_problem(await c.get("/api/whk/api-keys", headers=bearer(token)), 401)


async def test_jwt_disabled_refuses_tokens(settings):
    async with client(settings) as c:
        assert_problem(await c.get("/api/whk/api-keys", headers=bearer(jk.hs_token(scope="whk:admin"))), 401)


async def test_scopes_limit_areas_and_methods(settings, conn):
    cid = make_consumer(conn, "acme")
    read_only = consumer_key(conn, cid, scopes=["api-keys:read"])
    other_area = consumer_key(conn, cid, scopes=["webhooks:*"])
    async with client(settings) as c:
        assert (await c.get("/api/whk/api-keys", headers=bearer(read_only))).status_code == 200
        body = assert_problem(
            await c.post(
                "/api/whk/api-keys", headers=bearer(read_only), json={"name": "x", "consumer_id": cid}
            ),
            403,
        )
        assert "api-keys:write" in body["detail"]
        assert_problem(await c.get("/api/whk/api-keys", headers=bearer(other_area)), 403)


async def test_consumer_cannot_escalate_or_cross_tenants(settings, conn):
    a, b = make_consumer(conn, "a"), make_consumer(conn, "b")
    limited = consumer_key(conn, a, scopes=["api-keys:*"])
    key_b = consumer_key(conn, b)
    async with client(settings) as c:
        # Admin key from a consumer: more privilege than it holds, 403.
        assert_problem(await c.post("/api/whk/api-keys", headers=bearer(limited), json={"name": "x"}), 403)
        # Broader scopes than the creator holds: 403.
        r = await c.post(
            "/api/whk/api-keys",
            headers=bearer(limited),
            json={"name": "x", "consumer_id": a, "scopes": ["*"]},
        )
        assert assert_problem(r, 403)["errors"][0]["pointer"] == "/scopes"
        # Another tenant: 404, and nothing was created.
        before = conn.execute("SELECT count(*) FROM whk.api_keys").fetchone()
        r = await c.post("/api/whk/api-keys", headers=bearer(limited), json={"name": "x", "consumer_id": b})
        assert_problem(r, 404)
        assert conn.execute("SELECT count(*) FROM whk.api_keys").fetchone() == before
        # Listing and revoking another tenant's key: invisible / 404, no side effect.
        id_b = conn.execute("SELECT id FROM whk.api_keys WHERE consumer_id = %s", (b,)).fetchone()[0]
        listed = (await c.get("/api/whk/api-keys", headers=bearer(limited))).json()
        assert {k["consumer_id"] for k in listed} == {a}
        assert_problem(await c.delete(f"/api/whk/api-keys/{id_b}", headers=bearer(limited)), 404)
        assert (await c.get("/api/whk/api-keys", headers=bearer(key_b))).status_code == 200
        # Within the tenant, a narrower key is fine and shown once.
        r = await c.post(
            "/api/whk/api-keys",
            headers=bearer(limited),
            json={"name": "ro", "consumer_id": a, "scopes": ["api-keys:read"]},
        )
        assert r.status_code == 201, r.text
        new_key = r.json()["key"]
        assert new_key.startswith("whk_")
        assert (await c.get("/api/whk/api-keys", headers=bearer(new_key))).status_code == 200
        listed = (await c.get("/api/whk/api-keys", headers=bearer(limited))).json()
        assert new_key not in str(listed)


async def test_admin_creates_admin_key_and_each_mutation_is_audited(settings, conn):
    admin = admin_key(conn)
    async with client(settings) as c:
        r = await c.post(
            "/api/whk/api-keys", headers={**bearer(admin), "X-Request-ID": "req-123"}, json={"name": "ops"}
        )
        assert r.status_code == 201
        assert r.headers["x-request-id"] == "req-123"
        created = r.json()
        assert created["api_key"]["is_admin"]
        assert created["api_key"]["scopes"] == ["admin"]
        r = await c.delete(f"/api/whk/api-keys/{created['api_key']['id']}", headers=bearer(admin))
        assert r.status_code == 200
        assert_problem(
            await c.delete(f"/api/whk/api-keys/{created['api_key']['id']}", headers=bearer(admin)), 409
        )
    rows = conn.execute(
        "SELECT action, actor, target_id, request_id, before, after FROM whk.audit_log "
        "WHERE target_id = %s ORDER BY id",
        (str(created["api_key"]["id"]),),
    ).fetchall()
    assert [r[0] for r in rows] == ["api_key.create", "api_key.revoke"]
    assert rows[0][1].startswith("apikey:")
    assert rows[0][3] == "req-123"
    assert rows[0][4] is None
    assert rows[1][4]["revoked_at"] is None
    assert rows[1][5]["revoked_at"]
    text = str(conn.execute("SELECT array_agg(a::text) FROM whk.audit_log a").fetchone())
    assert created["key"] not in text
    assert secret_part(created["key"]) not in text


async def test_failed_mutation_leaves_no_audit_row(settings, conn):
    admin = admin_key(conn)
    before = conn.execute("SELECT count(*) FROM whk.audit_log").fetchone()[0]
    async with client(settings) as c:
        r = await c.post(
            "/api/whk/api-keys", headers=bearer(admin), json={"name": "x", "consumer_id": 424242}
        )
        assert_problem(r, 404)
    assert conn.execute("SELECT count(*) FROM whk.audit_log").fetchone()[0] == before


def test_keys_are_stored_hashed(conn):
    key = admin_key(conn)
    prefix, stored = conn.execute("SELECT prefix, secret_hash FROM whk.api_keys").fetchone()
    assert key.startswith(f"whk_{prefix}_")
    assert secret_part(key).encode() not in bytes(stored)
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO whk.api_keys (prefix, secret_hash, is_admin, name, created_by) "
            "VALUES ('abcdefghijkl', '\\x00', true, 'x', 'y')"
        )
