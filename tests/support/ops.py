"""The operations worker in tests: run it in-process or as `whk worker`, seed alert channels and rules,
a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

import psycopg
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from ops.worker import run_worker
from tests.support.delivery import TEST_BOX, TEST_SECRET_KEYS
from tests.support.dispatch import FAST_ENV, REPO, WHK
from tests.support.http_receivers import free_port
from whk.alertchannels import create_channel
from whk.settings import Settings, load_settings

# Fast operations timings on top of the dispatcher's: evaluate every second, retry notices quickly.
OPS_ENV = {
    **FAST_ENV,
    "WHK_ALERT_EVAL_EVERY_S": "1",
    "WHK_NOTIFY_RETRY_DELAY_S": "0.2",
    "WHK_NOTIFY_MAX_ATTEMPTS": "3",
    "WHK_NOTIFY_TIMEOUT_S": "3",
    "WHK_JOB_HEARTBEAT_TIMEOUT_S": "5",
}


def ops_settings(db_url: str, **overrides: str) -> Settings:
    return load_settings({**OPS_ENV, "WHK_DATABASE_URL": db_url, **overrides})


@contextlib.asynccontextmanager
async def worker(settings: Settings, *, ident: str = "test-worker") -> AsyncIterator[asyncio.Task[None]]:
    """The operations worker inside this event loop for the duration of the block."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, stop, ident=ident))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def start_worker(db_url: str, **env: str) -> subprocess.Popen[bytes]:
    """`whk worker` as a subprocess."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    full.update(OPS_ENV)
    full.update({"WHK_DATABASE_URL": db_url, "WHK_LOG_LEVEL": "INFO"})
    full.update(env)
    return subprocess.Popen([str(WHK), "worker"], env=full, cwd=REPO)


def channel(
    conn: psycopg.Connection[Any],
    kind: str,
    target: str,
    *,
    consumer_id: int | None = None,
    secret: str | None = None,
    config: dict[str, Any] | None = None,
) -> int:
    return create_channel(
        conn, TEST_BOX, consumer_id=consumer_id, kind=kind, target=target, secret=secret, config=config
    )


def rule(
    conn: psycopg.Connection[Any],
    condition: dict[str, Any],
    *,
    channels: list[int] = (),  # type: ignore[assignment]
    escalation: list[dict[str, Any]] | None = None,
    consumer_id: int | None = None,
    for_s: int = 0,
    throttle_s: int = 300,
    name: str = "test rule",
    severity: str = "critical",
) -> int:
    row = conn.execute(
        "INSERT INTO whk.whk_06_alertas (consumer_id, name, severity, condition, channels, escalation, "
        "for_s, throttle_seconds) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        [
            consumer_id,
            name,
            severity,
            json.dumps(condition),
            json.dumps([{"channel_id": c} for c in channels]),
            json.dumps(escalation or []),
            for_s,
            throttle_s,
        ],
    ).fetchone()
    assert row is not None
    return int(row[0])


def disable_builtins(conn: psycopg.Connection[Any]) -> None:
    conn.execute("UPDATE whk.whk_06_alertas SET enabled = false WHERE builtin IS NOT NULL")


def alert_row(conn: psycopg.Connection[Any], alert_id: int) -> dict[str, Any]:
    cur = conn.execute(
        "SELECT state, trigger_count, history_id, escalation_step, acknowledged_at, last_value "
        "FROM whk.whk_06_alertas WHERE id = %s",
        [alert_id],
    )
    row = cur.fetchone()
    assert row is not None and cur.description is not None
    return dict(zip([d.name for d in cur.description], row, strict=True))


def history(conn: psycopg.Connection[Any], alert_id: int) -> list[dict[str, Any]]:
    cur = conn.execute(
        "SELECT id, triggered_at, resolved_at, value, details, notified FROM whk.whk_06_alertas_historico "
        "WHERE alert_id = %s ORDER BY id",
        [alert_id],
    )
    assert cur.description is not None
    names = [d.name for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


@dataclass
class Smtp:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives."""

    port: int
    messages: list[Message] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd API)
        with self.lock:
            self.messages.append(message_from_bytes(envelope.original_content or envelope.content))
        return "250 OK"

    def authenticate(
        self, _server: Any, _session: Any, _envelope: Any, _mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            with self.lock:
                self.logins.append((data.login.decode(), data.password.decode()))
            return AuthResult(success=data.password == b"smtp-pass")
        return AuthResult(success=False)


@contextlib.contextmanager
def smtp_server() -> Iterator[Smtp]:
    box = Smtp(port=free_port())
    controller = Controller(
        box, hostname="127.0.0.1", port=box.port, authenticator=box.authenticate, auth_require_tls=False
    )
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


__all__ = [
    "OPS_ENV",
    "TEST_SECRET_KEYS",
    "Smtp",
    "alert_row",
    "channel",
    "disable_builtins",
    "history",
    "ops_settings",
    "rule",
    "smtp_server",
    "start_worker",
    "worker",
]
