"""Never unsigned, end to end: a DBA creates a consumer and a webhook in SQL only (psql, whk.create_consumer
and whk.create_webhook), commits an event,
and the delivery arrives SIGNED — the job worker that `whk dispatcher` runs provisions the secret — and
verifies with the `standardwebhooks` package against the secret read back with `whk webhooks secret`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from standardwebhooks.webhooks import Webhook

from tests.support.dispatch import FAST_ENV, start_process, stop_process
from tests.support.pg import PgServer
from tests.support.receiver import Receiver, receiver, wait_until

pytestmark = [pytest.mark.db, pytest.mark.e2e, pytest.mark.slow]

__all__ = ["receiver"]

WHK = str(Path(sys.executable).with_name("whk"))


def psql(pg_server: PgServer, db_url: str, script: str) -> str:
    done = subprocess.run(
        [str(pg_server.bindir / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", db_url],
        input=script.encode(),
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def cli_secret(db_url: str, webhook_id: int) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    env.update({**FAST_ENV, "WHK_DATABASE_URL": db_url})
    return subprocess.run(
        [WHK, "webhooks", "secret", str(webhook_id)], env=env, capture_output=True, timeout=60, check=False
    )


def _status(conn: psycopg.Connection[Any], hook: int) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT status FROM whk.whk_03_entregas WHERE webhook_id = %s ORDER BY id", [hook]
        ).fetchall()
    ]


async def test_a_webhook_made_in_sql_only_is_delivered_signed(
    pg_server: PgServer, db_url: str, conn: psycopg.Connection[Any], receiver: Receiver
):
    url = receiver.url("/dba")
    out = psql(
        pg_server,
        db_url,
        f"""
        \\set ON_ERROR_STOP 1
        SELECT whk.register_event_type('invoice.paid', '{{"type": "object"}}', 'an invoice was paid');
        BEGIN;
        SELECT whk.create_consumer(name => 'dba-acme') AS consumer \\gset
        SELECT whk.create_webhook(consumer_id => :consumer, name => 'made in psql', url => '{url}',
                                  event_types => '{{invoice.*}}') AS hook \\gset
        COMMIT;
        SELECT whk.emit('invoice.paid', '{{"invoice": 7}}'::jsonb);
        SELECT :hook;
        """,
    )
    hook = int(out.strip().splitlines()[-1])
    # Before any worker runs: it waits for its secret and the CLI has none to show.
    none_yet = cli_secret(db_url, hook)
    assert none_yet.returncode == 1 and b"no current signing secret" in none_yet.stderr

    proc = start_process(db_url, "d-sql", WHK_DISPATCHER_RUN_JOBS="true")
    try:
        assert await wait_until(lambda: bool(receiver.to("/dba")), 60), "the delivery never arrived"
        assert await wait_until(lambda: _status(conn, hook) == ["delivered"], 30)
    finally:
        assert stop_process(proc) == 0

    shown = cli_secret(db_url, hook)
    assert shown.returncode == 0, shown.stderr.decode()
    secret = shown.stdout.decode().strip()
    assert secret.startswith("whsec_")
    [got] = receiver.to("/dba")
    assert got.headers.get("webhook-signature", "").startswith("v1,")
    payload = Webhook(secret).verify(got.body, got.headers)  # raises on a bad signature
    assert payload["type"] == "invoice.paid" and payload["data"] == {"invoice": 7}
    assert json.loads(got.body)["type"] == "invoice.paid"
    row = conn.execute(
        "SELECT needs_secret_since, (SELECT count(*) FROM whk.webhook_secrets s WHERE s.webhook_id = w.id) "
        "FROM whk.whk_01_webhooks w WHERE w.id = %s",
        [hook],
    ).fetchone()
    assert row == (None, 1)
