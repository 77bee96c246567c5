"""Populate a database with encrypted secrets the way the API does (reserve the id, encrypt, insert)."""

from __future__ import annotations

import base64
import os
from typing import Any

import psycopg

from whk.secretbox import SecretBox, row_aad


def new_whsec() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def add_webhook(conn: psycopg.Connection[Any], consumer_id: int, box: SecretBox, *, credential: str) -> int:
    row = conn.execute(
        "INSERT INTO whk.whk_01_webhooks (consumer_id, name, url, event_types, auth_type, auth_header_name) "
        "VALUES (%s, 'hook', 'https://example.test/hook', '{order.created}', 'api_key', 'X-Key') "
        "RETURNING id",
        (consumer_id,),
    ).fetchone()
    assert row is not None
    wid = int(row[0])
    blob = box.encrypt(credential.encode(), row_id=row_aad("whk_01_webhooks", wid))
    conn.execute("UPDATE whk.whk_01_webhooks SET auth_credential_enc = %s WHERE id = %s", (blob, wid))
    return wid


def add_secret(conn: psycopg.Connection[Any], webhook_id: int, box: SecretBox, secret: str) -> int:
    row = conn.execute("SELECT nextval(pg_get_serial_sequence('whk.webhook_secrets', 'id'))").fetchone()
    assert row is not None
    sid = int(row[0])
    blob = box.encrypt(secret.encode(), row_id=row_aad("webhook_secrets", sid))
    conn.execute(
        "INSERT INTO whk.webhook_secrets (id, webhook_id, key_id, secret_enc) OVERRIDING SYSTEM VALUE "
        "VALUES (%s, %s, %s, %s)",
        (sid, webhook_id, f"key_{os.urandom(6).hex()}", blob),
    )
    return sid
