"""Helpers for API resource tests: tenants, auth headers and rows the dispatcher would normally write."""

from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tests.support.delivery import make_consumer

__all__ = ["Receiver", "Tenant", "World", "audit_count", "make_consumer", "make_delivery", "make_webhook"]


@dataclass(frozen=True)
class Tenant:
    consumer_id: int
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass(frozen=True)
class World:
    admin_key: str
    a: Tenant
    b: Tenant

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}


def make_webhook(
    conn: psycopg.Connection[Any],
    consumer_id: int,
    *,
    url: str = "http://127.0.0.1:9/hook",
    event_types: tuple[str, ...] = ("order.*",),
    name: str = "hook",
) -> int:
    row = conn.execute(
        "INSERT INTO whk.whk_01_webhooks (consumer_id, name, url, event_types) "
        "VALUES (%s, %s, %s, %s) RETURNING id",
        (consumer_id, name, url, list(event_types)),
    ).fetchone()
    assert row is not None
    return int(row[0])


def make_delivery(
    conn: psycopg.Connection[Any],
    webhook_id: int,
    *,
    event_type: str = "order.created",
    status: str = "pending",
    attempts: int = 0,
    data: dict[str, Any] | None = None,
) -> int:
    """An outbox event routed to ``webhook_id`` in ``status`` (what routing + attempts would leave)."""
    event_id = uuid.uuid4()
    out = conn.execute(
        "INSERT INTO whk.outbox (event_id, event_type, data, operation, status, routed_at) "
        "VALUES (%s, %s, %s, 'EMIT', 'routed', now()) RETURNING id, created_at",
        (event_id, event_type, Jsonb(data or {"id": 1})),
    ).fetchone()
    assert out is not None
    row = conn.execute(
        """
        INSERT INTO whk.delivery_queue (event_id, outbox_id, event_created_at, event_type, webhook_id,
                                         consumer_id, status, attempts, dead_at, dead_reason, delivered_at,
                                         ack_deadline, last_attempt_at)
        SELECT %(event_id)s, %(outbox_id)s, %(created_at)s, %(event_type)s, w.id, w.consumer_id, %(status)s,
               %(attempts)s,
               CASE WHEN %(status)s = 'dead' THEN now() END,
               CASE WHEN %(status)s = 'dead' THEN 'retries exhausted' END,
               CASE WHEN %(status)s = 'delivered' THEN now() END,
               CASE WHEN %(status)s = 'awaiting_ack' THEN now() + interval '1 hour' END,
               CASE WHEN %(attempts)s > 0 THEN now() END
        FROM whk.whk_01_webhooks w WHERE w.id = %(webhook_id)s
        RETURNING id
        """,
        {
            "event_id": event_id,
            "outbox_id": out[0],
            "created_at": out[1],
            "event_type": event_type,
            "status": status,
            "attempts": attempts,
            "webhook_id": webhook_id,
        },
    ).fetchone()
    assert row is not None
    delivery_id = int(row[0])
    for n in range(1, attempts + 1):
        ok = status == "delivered" and n == attempts
        conn.execute(
            """
            INSERT INTO whk.whk_03_entregas_tentativas (delivery_id, webhook_id, attempt_no, duration_ms,
                request_method, request_url, response_status, response_body, outcome, error_class)
            VALUES (%s, %s, %s, %s, 'POST', 'http://127.0.0.1:9/hook', %s, %s, %s, %s)
            """,
            (
                delivery_id,
                webhook_id,
                n,
                10.0 * n,
                200 if ok else 500,
                "ok" if ok else "boom",
                "delivered" if ok else "retry",
                None if ok else "http_status",
            ),
        )
    return delivery_id


def make_batch(conn: psycopg.Connection[Any], webhook_id: int) -> tuple[int, int, int]:
    """Two delivered deliveries sent together in one batch request, as the dispatcher records it: one
    attempt row (delivery_id = the lowest member, delivery_ids = both) listed by both deliveries.
    Returns (first, second, attempt id)."""
    first = make_delivery(conn, webhook_id, status="delivered", attempts=1)
    second = make_delivery(conn, webhook_id, status="delivered", attempts=0)
    row = conn.execute(
        "UPDATE whk.whk_03_entregas_tentativas SET delivery_ids = %s WHERE delivery_id = %s RETURNING id",
        ([first, second], first),
    ).fetchone()
    assert row is not None
    conn.execute(
        "UPDATE whk.delivery_queue SET attempt_ids = %s, attempts = 1 WHERE id = ANY(%s)",
        ([row[0]], [first, second]),
    )
    return first, second, int(row[0])


def audit_count(conn: psycopg.Connection[Any], action: str) -> int:
    """Audit rows of ``action`` written by WHK's processes (the tests' own SQL set-up is audited too, with
    a ``sql:`` actor, and is left out)."""
    row = conn.execute(
        "SELECT count(*) FROM whk.audit_log WHERE action = %s AND actor NOT LIKE 'sql:%%'", (action,)
    ).fetchone()
    assert row is not None
    return int(row[0])


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A minimal HTTP/1.1 receiver on 127.0.0.1 that records requests and answers ``status``/``reply``.

    It runs its own event loop in a thread: Litestar's test client drives the app through a blocking
    portal, so a server on the test's own loop would never get to answer.
    """

    def __init__(self, status: int = 200, reply: bytes = b'{"ok": true}') -> None:
        self.status = status
        self.reply = reply
        self.requests: list[Received] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def __aenter__(self) -> Receiver:
        self._thread.start()
        start = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
        )
        self._server = await asyncio.wrap_future(start)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        server = self._server

        async def _close() -> None:
            server.close()
            await server.wait_closed()

        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_close(), self._loop))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Received(method, path, headers, body))
            writer.write(
                f"HTTP/1.1 {self.status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(self.reply)}\r\nConnection: close\r\n\r\n".encode()
                + self.reply
            )
            await writer.drain()
        finally:
            writer.close()
