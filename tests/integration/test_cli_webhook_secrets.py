"""`whk webhooks provision-secrets` and `whk webhooks secret`: the by-hand path of never unsigned."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.delivery import TEST_BOX, TEST_SECRET_KEYS, make_consumer, make_webhook
from whk.secretbox import row_aad

pytestmark = pytest.mark.db

WHK = str(Path(sys.executable).with_name("whk"))


def whk(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    env.update({"WHK_DATABASE_URL": db_url, "WHK_SECRET_KEYS": TEST_SECRET_KEYS, "WHK_ENV": "development"})
    return subprocess.run([WHK, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.slow  # several `whk` subprocesses
def test_provision_secrets_by_hand_then_read_one_back(db_url: str, conn: psycopg.Connection[Any]):
    c = make_consumer(conn)
    waiting = [make_webhook(conn, c, "http://127.0.0.1:9/h", secret=None) for _ in range(3)]
    one = whk(db_url, "webhooks", "provision-secrets", "--webhook", str(waiting[0]))
    assert one.returncode == 0, one.stderr
    assert f"webhook {waiting[0]}: signing key key_" in one.stdout and "1 webhook(s)" in one.stdout
    rest = whk(db_url, "webhooks", "provision-secrets")
    assert rest.returncode == 0, rest.stderr
    assert "2 webhook(s) given a signing secret" in rest.stdout
    assert conn.execute(
        "SELECT count(*) FROM whk.whk_01_webhooks WHERE needs_secret_since IS NOT NULL"
    ).fetchone() == (0,)
    shown = whk(db_url, "webhooks", "secret", str(waiting[1]))
    assert shown.returncode == 0, shown.stderr
    sid, blob = conn.execute(
        "SELECT id, secret_enc FROM whk.webhook_secrets WHERE webhook_id = %s", [waiting[1]]
    ).fetchone()
    assert (
        shown.stdout.strip() == TEST_BOX.decrypt(bytes(blob), row_id=row_aad("webhook_secrets", sid)).decode()
    )
    again = whk(db_url, "webhooks", "provision-secrets")
    assert again.returncode == 0 and "0 webhook(s)" in again.stdout
