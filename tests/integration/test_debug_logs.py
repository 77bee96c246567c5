"""Debug mode and the per-webhook trace flag: real dispatchers delivering to real receivers, every log line
captured and read as JSON (whk.logs).

* a WHK_DEBUG run of `whk dispatcher` (the real composition root) plus the API carries the delivery fields
  on its lines, the request/response detail, the SQL timings and the classifier's decisions — and not one
  of the secrets the test created;
* the trace flag turns the same detail on for one webhook at INFO, without a restart, and off by itself;
* the flag's bounds: msgspec Meta on the API, a CHECK and a HINT in SQL.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.keys import create_api_key
from tests.support.delivery import emit, make_consumer, make_webhook, statuses
from tests.support.dispatch import (
    FAST_ENV,
    REPO,
    WHK,
    compress_schedule,
    fast_settings,
    running,
    stop_process,
)
from tests.support.receiver import Reply, receiver, wait_until
from whk.logs import DELIVERY_FIELDS, configure_logging
from whk.settings import load_settings
from whk.signing import generate_secret

pytestmark = [pytest.mark.db]
__all__ = ["receiver"]  # the fixture, imported

DB_PASSWORD = "dbPw-Qx7v9Lm2Zr4k"


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is one JSON object, or this fails


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """WHK's log handler writing JSON to a buffer for the test; the logging set-up is restored after."""
    root = logging.getLogger()
    handlers, level, whk_level = list(root.handlers), root.level, logging.getLogger("whk").level
    buf = io.StringIO()
    configure_logging(load_settings({"WHK_LOG_FORMAT": "json"}), stream=buf)
    yield buf
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("whk").setLevel(whk_level)


def _with_password(db_url: str) -> str:
    """The test server trusts local connections: a password in the URL is accepted (and ignored), so the
    processes run with a DSN that holds one, as in production."""
    return psycopg.conninfo.make_conninfo(db_url, password=DB_PASSWORD)


@pytest.mark.slow
async def test_debug_run_logs_delivery_fields_and_no_secret(
    db_url: str, conn: psycopg.Connection[Any], receiver: Any, tmp_path: Path, captured: io.StringIO
) -> None:
    compress_schedule(conn, [0.05, 0.05])
    signing_secret = generate_secret()
    credential = "outbound-Cred-8Hq2Wn5Tz"  # the receiver's own credential, sent as a bearer token
    header_token = "hdr-Token-3Kp9Vb6Yx"
    c = make_consumer(conn)
    hook = make_webhook(
        conn,
        c,
        receiver.url("/debug"),
        ["order.*"],
        secret=signing_secret,
        auth_type="bearer",
        auth_credential=credential,
        headers={"X-Api-Token": header_token, "X-Tenant": "acme"},
    )
    receiver.on("/debug", Reply(status=503, headers={"Retry-After": "0"}), default=Reply(body=b"thanks"))
    (event_id,) = emit(conn, "order.created", {"marker": "debug-body-7781"})
    api_key = create_api_key(conn, admin=True, consumer_id=None, name="debug test", actor="test")
    dsn = _with_password(db_url)

    # The API in debug mode (in this process, logging into `captured`): a refused call and a trace.
    api_settings = load_settings(
        {**FAST_ENV, "WHK_DATABASE_URL": dsn, "WHK_API_DB_ROLE": "whk_app", "WHK_DEBUG": "1"}
    )
    configure_logging(load_settings({"WHK_LOG_FORMAT": "json", "WHK_DEBUG": "1"}), stream=captured)
    async with AsyncTestClient(app=create_app(api_settings)) as client:
        auth = {"Authorization": f"Bearer {api_key}"}
        assert (await client.get("/api/whk/webhooks/999999", headers=auth)).status_code == 404
        r = await client.post(f"/api/whk/webhooks/{hook}/trace", json={"seconds": 60}, headers=auth)
        assert r.status_code == 200, r.text

    # `whk dispatcher` with WHK_DEBUG=1: the real composition root configures its logging.
    log_file = tmp_path / "dispatcher.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    env.update(FAST_ENV)
    env.update(
        {
            "WHK_DATABASE_URL": dsn,
            "WHK_DISPATCHER_ID": "dbg-1",
            "WHK_DEBUG": "1",
            "WHK_LOG_FORMAT": "json",
            "WHK_LOG_LEVEL": "INFO",
        }
    )
    with log_file.open("wb") as sink:
        proc = subprocess.Popen(
            [str(WHK), "dispatcher"], env=env, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT
        )
        try:
            assert await wait_until(lambda: statuses(conn, hook) == {"delivered": 1}, 20)
        finally:
            assert stop_process(proc) == 0
    output = log_file.read_text()
    api_output = captured.getvalue()
    lines = _json_lines(output)

    # What debug mode promises: the delivery fields, request and response bodies, the classifier's
    # decision and why, the SQL timing of each round.
    traced = [x for x in lines if x["logger"] == "whk.dispatcher.trace"]
    assert [x["decision"] for x in traced] == ["throttle", "delivered"]
    for x in traced:
        for field in DELIVERY_FIELDS:
            assert x[field] is not None, field
        assert x["event_id"] == event_id and x["webhook_id"] == hook and x["dispatcher_id"] == "dbg-1"
        assert "debug-body-7781" in x["request_body"]
        assert x["request_headers"]["X-Tenant"] == "acme"
        assert x["request_headers"]["Authorization"] == "***"
        assert x["request_headers"]["X-Api-Token"] == "***"
    assert [x["attempt"] for x in traced] == [1, 2]
    assert "http 503" in traced[0]["reason"] and traced[0]["next_state"] == "pending"
    assert traced[1]["response_body"] == "thanks"
    outcomes = [x for x in lines if x["logger"] == "whk.dispatcher.delivery"]
    assert {x["state"] for x in outcomes} == {"pending", "delivered"}
    assert all(x["delivery_id"] == traced[0]["delivery_id"] for x in outcomes)
    rounds = [x for x in lines if x.get("sql") == "whk.dispatch_round"]
    assert rounds and all(x["sql_ms"] >= 0 for x in rounds)
    assert any(x.get("sql") == "whk.record_outcomes" for x in lines)
    api_lines = _json_lines(api_output)
    assert any(x.get("status") == 404 and x.get("path") == "/api/whk/webhooks/999999" for x in api_lines)

    # ... and not one secret this test created, in either process's output.
    secrets = {
        "signing secret": signing_secret,
        "signing secret body": signing_secret.removeprefix("whsec_"),
        "outbound credential": credential,
        "custom header token": header_token,
        "API key": api_key,
        # whk_<prefix>_<secret>: the secret (token_urlsafe) may itself contain "_".
        "API key secret part": api_key.removeprefix("whk_").partition("_")[2],
        "database password": DB_PASSWORD,
        "secret-box key": FAST_ENV["WHK_SECRET_KEYS"].split(":", 1)[1],
    }
    for name, value in secrets.items():
        assert value not in output, f"the {name} is in the dispatcher's log"
        assert value not in api_output, f"the {name} is in the API's log"


@pytest.mark.slow
async def test_trace_flag_logs_one_webhook_then_switches_off(
    db_url: str, conn: psycopg.Connection[Any], receiver: Any, captured: io.StringIO
) -> None:
    c = make_consumer(conn)
    traced_hook = make_webhook(conn, c, receiver.url("/traced"), ["b.*"])
    quiet_hook = make_webhook(conn, c, receiver.url("/quiet"), ["a.*", "b.*"])
    # At INFO, without WHK_DEBUG: nothing about single deliveries is logged until the flag is set.
    settings = fast_settings(db_url, WHK_LOG_LEVEL="INFO")
    async with running(settings):
        emit(conn, "a.first")
        assert await wait_until(lambda: statuses(conn, quiet_hook) == {"delivered": 1}, 10)
        assert not [x for x in _json_lines(captured.getvalue()) if x["logger"] == "whk.dispatcher.trace"]

        # Turned on in SQL while the dispatcher runs (the API calls the same function).
        (until,) = conn.execute("SELECT whk.trace_webhook(%s, 6)", [traced_hook]).fetchone() or (None,)
        assert until is not None
        (second,) = emit(conn, "b.second")

        def traced_lines() -> list[dict[str, Any]]:
            return [x for x in _json_lines(captured.getvalue()) if x["logger"] == "whk.dispatcher.trace"]

        assert await wait_until(lambda: any(x["event_id"] == second for x in traced_lines()), 10)
        assert {x["webhook_id"] for x in traced_lines()} == {traced_hook}
        line = next(x for x in traced_lines() if x["event_id"] == second)
        assert line["trace"] == "webhook" and line["level"] == "INFO" and line["decision"] == "delivered"

        # It switches itself off: once trace_until has passed, new events are not traced.
        assert await wait_until(
            lambda: bool(conn.execute("SELECT now() > %s", [until]).fetchone()[0]),  # type: ignore[index]
            10,
        )
        (third,) = emit(conn, "b.third")
        assert await wait_until(lambda: statuses(conn, traced_hook) == {"delivered": 2}, 10)
        assert await wait_until(lambda: statuses(conn, quiet_hook) == {"delivered": 3}, 10)
        assert not any(x["event_id"] == third for x in traced_lines())


async def test_trace_bounds_api_and_sql(settings: Any, conn: psycopg.Connection[Any], receiver: Any) -> None:
    c = make_consumer(conn)
    hook = make_webhook(conn, c, receiver.url("/x"), ["*"])
    admin = create_api_key(conn, admin=True, consumer_id=None, name="admin", actor="test")
    tenant = create_api_key(conn, admin=False, consumer_id=c, name="tenant", scopes=["*"], actor="test")
    async with AsyncTestClient(app=create_app(settings)) as client:
        auth = {"Authorization": f"Bearer {admin}"}
        url = f"/api/whk/webhooks/{hook}/trace"
        too_long = await client.post(url, json={"seconds": 86_401}, headers=auth)
        assert too_long.status_code == 400
        assert too_long.headers["content-type"].startswith("application/problem+json")
        assert too_long.json()["errors"][0]["pointer"] == "/seconds"
        assert (await client.post(url, json={"seconds": -1}, headers=auth)).status_code == 400
        other = {"Authorization": f"Bearer {tenant}"}
        assert (await client.post(url, json={"seconds": 60}, headers=other)).status_code == 403
        assert (await client.post("/api/whk/webhooks/999999/trace", json={}, headers=auth)).status_code == 404
        on = await client.post(url, json={"seconds": 600}, headers=auth)
        assert on.status_code == 200 and on.json()["trace_until"] is not None
        audit = conn.execute(
            "SELECT count(*) FROM whk.audit_log WHERE action = 'webhook.trace' AND target_id = %s",
            [str(hook)],
        ).fetchone()
        assert audit == (1,)
        off = await client.post(url, json={"seconds": 0}, headers=auth)
        assert off.status_code == 200 and off.json()["trace_until"] is None
    # SQL: the function explains a bad duration; the table refuses a trace longer than a day.
    with pytest.raises(psycopg.errors.InvalidParameterValue) as bad:
        conn.execute("SELECT whk.trace_webhook(%s, 86401)", [hook])
    assert bad.value.diag.message_hint and "86400" in bad.value.diag.message_hint
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "UPDATE whk.webhook_runtime SET trace_set_at = now(), trace_until = now() + interval '25 hours' "
            "WHERE webhook_id = %s",
            [hook],
        )
