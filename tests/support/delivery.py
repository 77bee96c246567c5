"""Seeding helpers for delivery tests: consumers, webhooks, signing secrets and outbox events.

Events are inserted into ``whk.outbox`` directly (the shape capture triggers and ``whk.emit`` write), so
these tests depend on the data model only.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

import psycopg

from whk.secretbox import SecretBox, row_aad

# A fixed test key (never used outside tests).
TEST_SECRET_KEYS = "test1:" + base64.b64encode(bytes(range(32))).decode()
TEST_BOX = SecretBox.from_spec(TEST_SECRET_KEYS)
TEST_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def make_consumer(conn: psycopg.Connection[Any], name: str = "acme", **cols: Any) -> int:
    names = ["name", *cols]
    values = [name, *cols.values()]
    row = conn.execute(
        f"INSERT INTO whk.whk_04_assinantes ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))}) "
        "RETURNING id",
        values,
    ).fetchone()
    assert row is not None
    return int(row[0])


def make_webhook(
    conn: psycopg.Connection[Any],
    consumer_id: int,
    url: str,
    event_types: list[str] | None = None,
    *,
    secret: str | None = TEST_SECRET,
    auth_credential: str | None = None,
    **cols: Any,
) -> int:
    cols.setdefault("name", f"hook {url}")
    names = ["consumer_id", "url", "event_types", *cols]
    values = [consumer_id, url, event_types or ["*"]]
    values += [json.dumps(v) if isinstance(v, dict) else v for v in cols.values()]
    row = conn.execute(
        f"INSERT INTO whk.whk_01_webhooks ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))}) "
        "RETURNING id",
        values,
    ).fetchone()
    assert row is not None
    hook_id = int(row[0])
    if auth_credential is not None:
        conn.execute(
            "UPDATE whk.whk_01_webhooks SET auth_credential_enc = %s WHERE id = %s",
            [TEST_BOX.encrypt(auth_credential.encode(), row_id=row_aad("whk_01_webhooks", hook_id)), hook_id],
        )
    if secret is not None:
        add_secret(conn, hook_id, secret)
    return hook_id


def add_secret(
    conn: psycopg.Connection[Any], webhook_id: int, secret: str, *, expires_at: datetime | None = None
) -> int:
    row = conn.execute(
        "INSERT INTO whk.webhook_secrets (webhook_id, key_id, secret_enc, expires_at) "
        "VALUES (%s, 'key_' || md5(random()::text), '\\x00', %s) RETURNING id",
        [webhook_id, expires_at],
    ).fetchone()
    assert row is not None
    secret_id = int(row[0])
    conn.execute(
        "UPDATE whk.webhook_secrets SET secret_enc = %s WHERE id = %s",
        [TEST_BOX.encrypt(secret.encode(), row_id=row_aad("webhook_secrets", secret_id)), secret_id],
    )
    return secret_id


def emit(
    conn: psycopg.Connection[Any],
    event_type: str,
    data: dict[str, Any] | None = None,
    *,
    key: str | None = None,
    deliver_at: datetime | None = None,
    count: int = 1,
) -> list[str]:
    """Insert ``count`` events (data gets ``seq``: 0..count-1); returns their event ids."""
    rows = conn.execute(
        """
        INSERT INTO whk.outbox (event_type, event_key, data, operation, deliver_at)
        SELECT %(type)s::text, %(key)s::text, %(data)s::jsonb || jsonb_build_object('seq', g),
               'EMIT', %(deliver_at)s::timestamptz
        FROM generate_series(0, %(n)s - 1) g
        ORDER BY g
        RETURNING event_id::text
        """,
        {
            "type": event_type,
            "key": key,
            "data": json.dumps(data or {}),
            "deliver_at": deliver_at,
            "n": count,
        },
    ).fetchall()
    return [r[0] for r in rows]


def route(conn: psycopg.Connection[Any], limit: int = 1000) -> int:
    """Route up to ``limit`` pending outbox events, taking nothing (``whk.route_and_take`` with p_take 0)."""
    row = conn.execute("SELECT max(routed) FROM whk.route_and_take(%s, NULL, 0, 0)", [limit]).fetchone()
    assert row is not None
    return int(row[0])


def statuses(conn: psycopg.Connection[Any], webhook_id: int) -> dict[str, int]:
    rows = conn.execute(
        "SELECT status, count(*) FROM whk.whk_03_entregas WHERE webhook_id = %s GROUP BY status", [webhook_id]
    ).fetchall()
    return {r[0]: int(r[1]) for r in rows}
