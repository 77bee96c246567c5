"""Every registered route against its OpenAPI document (schemathesis-style checks, capped for CI).

Covers whatever the app registers: as an admin and as a tenant, each operation gets schema-valid requests
and invalid ones (see tests/support/openapi_fuzz.py). Required: 0 server errors, every documented
status/content type/schema respected, problem+json on every 4xx/5xx. SQL-injection strings in every query
parameter (filters, sorts, cursors) change nothing: no row changes, no more rows than a value that matches
nothing, and allow-listed parameters (sort) refuse them.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api_platform import admin_key, bearer, client, consumer_key, make_consumer
from tests.support.openapi_fuzz import INJECTIONS, Case, Generator, cases, check, operations

pytestmark = [pytest.mark.db, pytest.mark.slow]

VALID_PER_OPERATION = 4
MAX_CASES_PER_OPERATION = 45
NO_MATCH = "zz-matches-nothing"
# Tables whose content a GET may legitimately change (rate-limit state, last use of a key).
_VOLATILE = {"api_rate_limits", "api_keys", "audit_log"}


def fingerprint(conn) -> dict[str, str]:
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'whk' AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1"
        ).fetchall()
        if r[0] not in _VOLATILE
    ]
    out = {}
    for t in tables:
        row = conn.execute(
            f"SELECT count(*), md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM whk.{t} x"
        ).fetchone()
        out[t] = f"{row[0]}:{row[1]}"
    return out


def seed(conn) -> dict[str, Any]:
    conn.execute(
        "UPDATE whk.whk_05_configuracoes SET value = '1000000' WHERE key = 'rate_limit.api_per_minute'"
    )
    a = make_consumer(conn, "tenant-a", api_rate_limit_per_minute=1_000_000)
    b = make_consumer(conn, "tenant-b", api_rate_limit_per_minute=1_000_000)
    hooks = {}
    for cid in (a, b):
        hooks[cid] = conn.execute(
            "INSERT INTO whk.whk_01_webhooks (consumer_id, name, url, event_types) "
            "VALUES (%s, 'fuzz', 'http://127.0.0.1:9/hook', '{order.created}') RETURNING id",
            (cid,),
        ).fetchone()[0]
    return {"a": a, "b": b, "hooks": hooks, "admin": admin_key(conn), "tenant": consumer_key(conn, a)}


def count_items(payload: Any) -> int | None:
    if isinstance(payload, list):
        return len(payload)
    if isinstance(payload, dict):
        for key in ("items", "data", "results"):
            if isinstance(payload.get(key), list):
                return len(payload[key])
    return None


async def send(c, case: Case, headers: dict[str, str]):
    kwargs: dict[str, Any] = {"params": case.query, "headers": headers}
    if case.raw_body is not None:
        kwargs["content"] = case.raw_body
        kwargs["headers"] = {**headers, "content-type": "application/json"}
    elif case.method in ("post", "put", "patch") or case.body is not None:
        kwargs["json"] = case.body
    return await c.request(case.method.upper(), case.path, **kwargs)


async def test_every_operation_conforms(settings, conn):
    data = seed(conn)
    failures: list[str] = []
    sent = 0
    async with client(settings) as c:
        doc = (await c.get("/schema/openapi.json")).json()
        # The development mock receiver (any method) answers whatever status it is asked for (?status=261): a
        # simulator of a webhook endpoint (404 in production), not the management contract.
        ops = [o for o in operations(doc) if not o[2].get("operationId", "").startswith("mock_receive")]
        assert len(ops) >= 3
        for who, key, path_values, tenant in (
            (
                "tenant",
                data["tenant"],
                {
                    "webhook_id": [data["hooks"][data["a"]], data["hooks"][data["b"]]],
                    "consumer_id": [data["a"], data["b"]],
                },
                True,
            ),
            (
                "admin",
                data["admin"],
                {"webhook_id": list(data["hooks"].values()), "consumer_id": [data["b"]]},
                False,
            ),
        ):
            gen = Generator(doc, seed=7 if tenant else 11)
            for path, method, op in ops:
                values = (
                    path_values if method != "delete" else {"webhook_id": [987654], "consumer_id": [987654]}
                )
                values = {**values, "key_id": [987654]}
                todo = cases(gen, path, method, op, values, valid_count=VALID_PER_OPERATION)
                if len(todo) > MAX_CASES_PER_OPERATION:
                    # the hostile bodies always run; a sample of the rest
                    hostile = [t for t in todo if t.kind == "hostile"]
                    rest = [t for t in todo[VALID_PER_OPERATION:] if t.kind != "hostile"]
                    todo = (
                        todo[:VALID_PER_OPERATION]
                        + hostile
                        + gen.rng.sample(rest, MAX_CASES_PER_OPERATION - VALID_PER_OPERATION - len(hostile))
                    )
                for case in todo:
                    r = await send(c, case, bearer(key))
                    sent += 1
                    for problem in check(doc, op, case, r.status_code, r.headers, r.content):
                        failures.append(f"{who}: {case.describe()} -> {r.status_code}: {problem}")
    assert sent > 200
    kinds: dict[str, int] = {}
    for f in failures:
        kinds[f.split(": ", 2)[-1][:60]] = kinds.get(f.split(": ", 2)[-1][:60], 0) + 1
    assert not failures, f"{len(failures)} of {sent} responses fail: {kinds}\n" + "\n".join(
        f[:400] for f in failures[:40]
    )


async def test_sql_injection_in_query_parameters_changes_nothing(settings, conn):
    data = seed(conn)
    failures: list[str] = []
    checked = 0
    async with client(settings) as c:
        doc = (await c.get("/schema/openapi.json")).json()
        before = fingerprint(conn)
        for who, key in (("admin", data["admin"]), ("tenant", data["tenant"])):
            for path, method, op in operations(doc):
                if method != "get" or "{" in path:
                    continue
                for p in (x for x in op.get("parameters", []) if x["in"] == "query"):
                    name = p["name"]
                    baseline = await c.get(path, params={name: NO_MATCH}, headers=bearer(key))
                    base_count = count_items(baseline.json()) if baseline.status_code == 200 else None
                    for inj in INJECTIONS:
                        r = await c.get(path, params={name: inj}, headers=bearer(key))
                        checked += 1
                        where = f"{who} GET {path}?{name}={inj!r}"
                        if r.status_code >= 500:
                            failures.append(f"{where}: {r.status_code}")
                        elif r.status_code == 200:
                            if name in ("sort", "order", "order_by"):
                                failures.append(f"{where}: an allow-listed parameter accepted it")
                            n = count_items(r.json())
                            if n is not None and base_count is not None and n > base_count:
                                failures.append(f"{where}: {n} rows, a non-matching value gave {base_count}")
                        elif r.status_code not in (400, 404, 422):
                            failures.append(f"{where}: unexpected {r.status_code}")
        after = fingerprint(conn)
    assert checked > 50
    assert not failures, "\n".join(failures[:40])
    assert after == before
