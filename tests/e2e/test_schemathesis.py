"""schemathesis (the real one) against the live API's /schema/openapi.json, with all its default checks.

`whk api` runs as a process on a throwaway database; every operation gets generated requests as an admin
in all four phases (examples, coverage, fuzzing, stateful), examples capped to fit CI (~4,400 requests,
about 70 s here). schemathesis's own checks include problem+json conformance of every documented error
response (every 4xx/5xx of this API is documented as application/problem+json).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import port_for
import psycopg
import pytest

from api.jwtauth import ADMIN_CLAIM_SCOPE
from tests.support.dispatch import FAST_ENV
from tests.support.jwt_keys import HS_SECRET, ISSUER, hs_token
from tests.support.pg import PgServer

pytestmark = [pytest.mark.db, pytest.mark.e2e, pytest.mark.slow]

WHK = str(Path(sys.executable).with_name("whk"))


@dataclass(frozen=True)
class LiveApi:
    base: str
    headers: dict[str, str]


@pytest.fixture(scope="module")
def live_api(pg_server: PgServer, template_db: str) -> Iterator[LiveApi]:
    name = pg_server.create_database(template=template_db)
    dsn = pg_server.dsn(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # The contract test is not a rate-limit test: let it run at full speed.
        conn.execute(
            "UPDATE whk.whk_05_configuracoes SET value = '100000000' WHERE key = 'rate_limit.api_per_minute'"
        )
        cid = conn.execute(
            "INSERT INTO whk.whk_04_assinantes (name) VALUES ('fuzz') RETURNING id"
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO whk.whk_01_webhooks (consumer_id, name, url, event_types) "
            "VALUES (%s, 'fuzz', 'http://127.0.0.1:9/hook', '{order.created}')",
            (cid,),
        )
    port = port_for.select_random()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    env.update(
        {
            **FAST_ENV,
            "WHK_DATABASE_URL": dsn,
            "WHK_API_PORT": str(port),
            "WHK_JWT_SECRET": HS_SECRET,
            "WHK_JWT_ISSUER": ISSUER,
        }
    )
    # The run authenticates with an admin JWT, not an API key: its stateful phase lists API keys, then
    # revokes what it found (DELETE /api/whk/api-keys/{key_id}), so a key would log the run out half-way.
    token = hs_token(sub="schemathesis", scope=ADMIN_CLAIM_SCOPE, exp=int(time.time()) + 3600)
    proc = subprocess.Popen([WHK, "api"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/schema/openapi.json", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the API did not start"
                time.sleep(0.2)
        yield LiveApi(base=base, headers={"Authorization": f"Bearer {token}"})
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
        pg_server.drop_database(name)


def test_schemathesis_default_checks_pass(live_api: LiveApi, tmp_path: Path) -> None:
    """`schemathesis run` with its default checks over every operation; exit 0 means no failure found."""
    st = Path(sys.executable).with_name("schemathesis")
    # 422 is this API's documented answer to a schema-valid but semantically refused request (an SSRF rule,
    # a filter PostgreSQL cannot compile, a cursor made for another sort, text with NUL characters):
    # problem+json with a JSON pointer, never silently accepted. 400 is kept for what the schema refuses.
    (tmp_path / "schemathesis.toml").write_text(
        "[checks.positive_data_acceptance]\n"
        'expected-statuses = ["2XX", "401", "403", "404", "409", "422", "429"]\n'
    )
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "HOME": str(tmp_path)}
    proc = subprocess.run(
        [
            str(st),
            "run",
            f"{live_api.base}/schema/openapi.json",
            "--header",
            f"Authorization:{live_api.headers['Authorization']}",
            "--max-examples",
            "8",
            "--seed",
            "20261129",
            "--generation-deterministic",
            "--request-timeout",
            "20",
            # The development mock receiver answers whatever status it is asked for (?status=503 -> a 503
            # with its JSON receipt, after ?delay_ms): a simulator of a webhook endpoint for development
            # (404 in production), not part of the management contract. Reading and clearing what it
            # received and its scenario (admin GET/PUT/DELETE) are tested like every other operation.
            *(
                arg
                for method in ("get", "post", "put", "patch", "delete")
                for arg in ("--exclude-operation-id", f"mock_receive_{method}")
            ),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # picks up tmp_path/schemathesis.toml
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-12000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "failures" not in proc.stdout.rsplit("SUMMARY", 1)[-1]
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in proc.stdout, proc.stdout[-6000:]
    # Still serving, and the run's credential still valid (401s from keys the run created, used and
    # revoked itself are right answers).
    r = httpx.get(f"{live_api.base}/api/whk/api-keys", headers=live_api.headers, timeout=10)
    assert r.status_code == 200, r.text


# Hostile bodies (issue 15 §3), as explicit cases of the same run: schemathesis's own default checks on each
# response (no server error, documented status, problem+json conformance), plus the 400 and the pointer.
HOSTILE_BODIES: list[tuple[str, str, bytes, str]] = [
    (
        "/api/whk/webhooks",
        "metadata nested 100,000 levels",
        b'{"name": "deep", "url": "http://127.0.0.1:9/h", "event_types": ["*"], "consumer_id": 1,'
        + b' "metadata": '
        + b'{"a":' * 100_000
        + b"1"
        + b"}" * 100_001,
        "/metadata",
    ),
    (
        "/api/whk/events/trigger",
        "data nested 5,000 levels",
        b'{"type": "order.created", "data": ' + b'{"a":' * 5000 + b"1" + b"}" * 5001,
        "/data",
    ),
    (
        "/api/whk/webhooks",
        "invalid UTF-8",
        b'{"name": "caf\xe9", "url": "http://127.0.0.1:9/h", "event_types": ["*"], "consumer_id": 1}',
        "",
    ),
]


@pytest.mark.parametrize(
    ("path", "what", "raw", "pointer"), HOSTILE_BODIES, ids=[h[1] for h in HOSTILE_BODIES]
)
def test_schemathesis_hostile_bodies(
    live_api: LiveApi, path: str, what: str, raw: bytes, pointer: str
) -> None:
    import schemathesis

    schema = schemathesis.openapi.from_url(f"{live_api.base}/schema/openapi.json")
    case = schema[path]["POST"].Case(media_type="application/json")
    response = case.call(headers={**live_api.headers, "Content-Type": "application/json"}, data=raw)
    case.validate_response(response, headers=live_api.headers)
    assert response.status_code == 400, (what, response.text)
    assert response.json()["errors"][0]["pointer"] == pointer, response.text
