"""``whk explain "UPDATE erp.orders SET status = 'paid' WHERE id = 42" [--json]``: what one ERP statement
would make WHK send, without sending anything.

The statement runs through ``whk.explain`` (``sql/functions/delivery/explain.sql``): in a savepoint that is
always rolled back, so the ERP tables, the outbox and the deliveries are as before (sequence values the
statement took are not given back: gaps are expected). It returns the events the statement would emit and,
per webhook, whether routing would reach it and why not. What SQL cannot do is sign: the webhook's secret
is encrypted with WHK_SECRET_KEYS, which only the application holds. Here each routed request is built by
the dispatcher's own code (``dispatcher.request.prepare_webhook`` / ``build_request`` over
``whk/webhook_request.py``), so the headers, the body and the ``webhook-signature`` are what a delivery
would carry (with a fresh ``webhook-timestamp``). Credentials of outbound auth are masked in the output,
as in the attempt log.

The statement is checked here first with pglast (one INSERT, UPDATE, DELETE or MERGE; no object of schema
``whk``), for a clear message before connecting; ``whk.explain`` checks it again against the catalog.
Runs with the CLI's database role, which needs the statement's privileges and read access to WHK's tables
(a DBA's role).
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Sequence
from typing import Any, Final

import msgspec
import pglast
import psycopg
from pglast import ast, visitors

from dispatcher.errors import UnsignedRequestRefused
from dispatcher.models import WebhookRow
from dispatcher.request import (
    PreparedWebhook,
    build_request,
    event_message_id,
    loggable_headers,
    prepare_webhook,
)
from whk.db import check_schema_version, connect
from whk.errors import WhkError
from whk.secretbox import SecretBox
from whk.settings import Settings
from whk.sqlfiles import load_queries

__all__ = [
    "ExplainRefused",
    "ExplainedEvent",
    "ExplainedRequest",
    "ExplainedTarget",
    "check_statement",
    "cmd_explain",
    "explain",
]

HINT: Final = (
    "whk explain runs ONE INSERT, UPDATE, DELETE or MERGE on ERP tables, e.g. "
    "whk explain \"UPDATE erp.orders SET status = 'paid' WHERE id = 42\""
)
_DML: Final = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)
_WHK_SCHEMA: Final = "whk"
_FIELDS: Final = tuple(WebhookRow.__struct_fields__)


class ExplainRefused(WhkError):
    """The statement is not one ``whk explain`` runs (not one DML statement, or it touches schema whk)."""


class ExplainedRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The signed request a delivery would send (credentials masked)."""

    method: str
    url: str
    headers: dict[str, str]
    body: str


class ExplainedTarget(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One webhook as routing sees the event: routed or why not, and the request when routed.

    ``not_sent``: why no signed request can be built for a routed webhook (no signing secret yet, a
    broken configuration); nothing is ever sent unsigned."""

    webhook_id: int | None
    webhook_name: str | None
    consumer_id: int | None
    routed: bool
    reason: str | None
    request: ExplainedRequest | None = None
    not_sent: str | None = None


class ExplainedEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    event_id: str
    event_type: str
    event_version: int
    event_key: str | None
    targets: list[ExplainedTarget]


class _WhkNames(visitors.Visitor):
    """Every relation and function the statement names in schema whk."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def visit_RangeVar(self, _ancestors: Any, node: ast.RangeVar) -> None:  # noqa: N802 (pglast's name)
        if node.schemaname == _WHK_SCHEMA:
            self.found.append(f"{node.schemaname}.{node.relname}")

    def visit_FuncCall(self, _ancestors: Any, node: ast.FuncCall) -> None:  # noqa: N802 (pglast's name)
        names = [getattr(n, "sval", "") for n in node.funcname or ()]
        if len(names) > 1 and names[0] == _WHK_SCHEMA:
            self.found.append(".".join(names))


def check_statement(statement: str) -> None:
    """Raise ``ExplainRefused`` unless ``statement`` is one INSERT/UPDATE/DELETE/MERGE naming nothing in
    schema whk. Syntax only: ``whk.explain`` repeats the check against the catalog (views, rules, the
    search_path)."""
    try:
        parsed = pglast.parse_sql(statement)
    except pglast.parser.ParseError as exc:
        raise ExplainRefused(f"the statement is not valid SQL: {exc.args[0]}", hint=HINT) from exc
    if len(parsed) != 1:
        raise ExplainRefused(f"the text holds {len(parsed)} statements, not one", hint=HINT)
    stmt = parsed[0].stmt
    if not isinstance(stmt, _DML):
        raise ExplainRefused(
            f"whk explain refuses a {type(stmt).__name__}: only INSERT, UPDATE, DELETE or MERGE", hint=HINT
        )
    names = _WhkNames()
    names(stmt)
    if names.found:
        raise ExplainRefused(
            f"the statement touches WHK's own schema ({', '.join(sorted(set(names.found)))})",
            hint="explain a statement on ERP tables; WHK changes through its SQL functions and API",
        )


_EXPLAIN = (
    "SELECT event_id, event_type, event_version, event_key, webhook_id, webhook_name, consumer_id, routed, "
    "reason, headers ->> 'webhook-timestamp', body FROM whk.explain(%(statement)s)"
)


def _signed_request(
    hook: PreparedWebhook | None, event_id: uuid.UUID, body: str, timestamp: int, settings: Settings
) -> tuple[ExplainedRequest | None, str | None]:
    """The request the dispatcher would send for this event, or why it would send none."""
    if hook is None:  # deleted since whk.explain read it
        return None, "the webhook no longer exists"
    try:
        req = build_request(
            hook,
            msg_id=event_message_id(event_id),
            body=body.encode("utf-8"),
            timestamp=timestamp,
            deadline_s=hook.row.timeout_ms / 1000,
            user_agent=settings.dispatcher.user_agent,
        )
    except UnsignedRequestRefused as exc:
        return None, str(exc)
    headers = loggable_headers(hook, req.headers)
    return ExplainedRequest(req.method, req.url, headers, req.body.decode("utf-8")), None


def explain(
    conn: psycopg.Connection[Any], box: SecretBox, settings: Settings, statement: str
) -> list[ExplainedEvent]:
    """Run ``whk.explain`` and sign each routed request as the dispatcher would."""
    check_statement(statement)
    try:
        rows = conn.execute(_EXPLAIN, {"statement": statement}).fetchall()
    except psycopg.Error as exc:
        diag = exc.diag
        raise WhkError(diag.message_primary or str(exc), hint=diag.message_hint) from exc
    routed_ids = sorted({int(r[4]) for r in rows if r[7]})
    queries = load_queries("dispatcher", "queries.sql")
    hooks = {
        int(r[0]): prepare_webhook(WebhookRow(**dict(zip(_FIELDS, r, strict=True))), box)
        for r in conn.execute(queries["webhooks"], {"ids": routed_ids}).fetchall()
    }
    events: dict[uuid.UUID, ExplainedEvent] = {}
    for event_id, event_type, version, key, webhook_id, name, consumer_id, routed, reason, ts, body in rows:
        event = events.setdefault(
            event_id, ExplainedEvent(str(event_id), event_type, int(version), key, targets=[])
        )
        request: ExplainedRequest | None = None
        not_sent: str | None = None
        if routed:
            request, not_sent = _signed_request(hooks.get(int(webhook_id)), event_id, body, int(ts), settings)
        event.targets.append(
            ExplainedTarget(webhook_id, name, consumer_id, bool(routed), reason, request, not_sent)
        )
    return list(events.values())


def _echo(msg: str) -> None:
    print(msg, flush=True)


def _print_text(events: Sequence[ExplainedEvent]) -> None:
    if not events:
        _echo("no event: the statement would emit nothing (no captured table changed)")
    for event in events:
        key = f", key {event.event_key}" if event.event_key is not None else ""
        _echo(f"event {event.event_type} v{event.event_version} ({event.event_id}{key})")
        for t in event.targets:
            who = "no webhook" if t.webhook_id is None else f'webhook {t.webhook_id} "{t.webhook_name}"'
            if not t.routed:
                _echo(f"  not sent  {who}: {t.reason}")
                continue
            _echo(f"  routed    {who} (consumer {t.consumer_id}){': ' + t.reason if t.reason else ''}")
            if t.request is None:
                _echo(f"            no request: {t.not_sent}")
                continue
            _echo(f"            {t.request.method} {t.request.url}")
            for name, value in t.request.headers.items():
                _echo(f"            {name}: {value}")
            _echo(f"            {t.request.body}")
    _echo("nothing was emitted or delivered: the statement was rolled back (sequence values it took are not)")


def cmd_explain(settings: Settings, args: argparse.Namespace) -> int:
    statement: str = args.statement
    check_statement(statement)  # before connecting: a refusal needs no database
    box = SecretBox.from_settings(settings)
    with connect(settings) as conn:
        check_schema_version(conn)
        events = explain(conn, box, settings, statement)
    if args.json:
        sys.stdout.write(msgspec.json.encode(events).decode("utf-8") + "\n")
    else:
        _print_text(events)
    return 0
