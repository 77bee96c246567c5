"""IP allowlist against a real uvicorn server: a client bound to 127.0.0.2, spoofed X-Forwarded-For."""

import pytest

from tests.support.api_platform import (
    PROBLEM,
    admin_key,
    bearer,
    consumer_key,
    http_client,
    make_consumer,
    real_server,
    settings_for,
)

pytestmark = [pytest.mark.db, pytest.mark.e2e]


def denied_rows(conn):
    return conn.execute(
        "SELECT actor, consumer_id, host(source_ip), after->>'path' FROM whk.audit_log "
        "WHERE action = 'auth.ip_denied' ORDER BY id"
    ).fetchall()


async def test_allowlist_with_direct_clients(db_url, conn):
    cid = make_consumer(conn, "acme", allowed_ips=["127.0.0.1/32", "2001:db8::/32"])
    key = consumer_key(conn, cid)
    async with real_server(settings_for(db_url)) as base:
        async with http_client("127.0.0.1") as local:
            r = await local.get(f"{base}/api/whk/api-keys", headers=bearer(key))
            assert r.status_code == 200, r.text
        async with http_client("127.0.0.2") as other:
            r = await other.get(f"{base}/api/whk/api-keys", headers=bearer(key))
            assert r.status_code == 403
            assert r.headers["content-type"].startswith(PROBLEM)
            # Spoofing the header from an untrusted peer changes nothing.
            for spoof in ("127.0.0.1", "127.0.0.1, 127.0.0.1", "2001:db8::1"):
                r = await other.get(
                    f"{base}/api/whk/api-keys", headers={**bearer(key), "X-Forwarded-For": spoof}
                )
                assert r.status_code == 403, spoof
    rows = denied_rows(conn)
    assert len(rows) == 4
    assert {r[2] for r in rows} == {"127.0.0.2"}
    assert all(r[1] == cid and r[0].startswith("apikey:") and r[3] == "/api/whk/api-keys" for r in rows)


async def test_forwarded_for_from_a_trusted_proxy(db_url, conn):
    cid = make_consumer(conn, "acme", allowed_ips=["198.51.100.0/24", "::1/128"])
    key = consumer_key(conn, cid)
    settings = settings_for(db_url, WHK_API_TRUSTED_PROXIES="127.0.0.1/32")
    async with real_server(settings) as base:
        async with http_client("127.0.0.1") as proxy:
            ok = await proxy.get(
                f"{base}/api/whk/api-keys",
                headers={**bearer(key), "X-Forwarded-For": "6.6.6.6, 198.51.100.7"},
            )
            assert ok.status_code == 200, ok.text
            ok6 = await proxy.get(
                f"{base}/api/whk/api-keys", headers={**bearer(key), "X-Forwarded-For": "::1"}
            )
            assert ok6.status_code == 200
            # The right-most untrusted hop is the client; the left-most entry is client-written.
            r = await proxy.get(
                f"{base}/api/whk/api-keys",
                headers={**bearer(key), "X-Forwarded-For": "198.51.100.7, 203.0.113.5"},
            )
            assert r.status_code == 403
            # Without the header the proxy itself is the client, and it is not allowed.
            assert (await proxy.get(f"{base}/api/whk/api-keys", headers=bearer(key))).status_code == 403
        async with http_client("127.0.0.2") as untrusted:
            r = await untrusted.get(
                f"{base}/api/whk/api-keys", headers={**bearer(key), "X-Forwarded-For": "198.51.100.7"}
            )
            assert r.status_code == 403
    assert [r[2] for r in denied_rows(conn)] == ["203.0.113.5", "127.0.0.1", "127.0.0.2"]


async def test_admin_allowlist(db_url, conn):
    key = admin_key(conn)
    settings = settings_for(db_url, WHK_API_ADMIN_ALLOWED_IPS="127.0.0.1/32")
    async with real_server(settings) as base:
        async with http_client("127.0.0.1") as local:
            assert (await local.get(f"{base}/api/whk/api-keys", headers=bearer(key))).status_code == 200
        async with http_client("127.0.0.2") as other:
            assert (await other.get(f"{base}/api/whk/api-keys", headers=bearer(key))).status_code == 403
    rows = denied_rows(conn)
    assert len(rows) == 1
    assert rows[0][1] is None
