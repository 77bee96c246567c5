"""``whk source URL [--group G] [--event-type T] …``: turn a broker's messages into WHK events.

Composes ``whk.queue_source.run_source`` (emit under the contract, commit, then dead-letter and ack) with
the broker the URL's scheme names: ``redis[s]://host[:port]/<stream>`` (``whk.redis_source``, with
``--group``) or ``amqp[s]://host[:port]/<vhost>?queue=Q`` (``whk.amqp_source``). The URL
may carry a login here (``redis://user:password@host/stream``): it is used, never stored. SIGTERM/SIGINT
finish the batch in hand and stop. docs/queues.md has the message format and the guarantees.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from typing import Any

from whk.amqp_source import AmqpQueueSource
from whk.amqp_url import parse_amqp_source
from whk.db import acheck_schema_version, aconnect
from whk.errors import WhkError
from whk.queue_source import OpenableSource, SourceStats, run_source
from whk.queue_targets import QueueUrlError, parse_redis_url
from whk.redis_source import RedisStreamSource
from whk.settings import Settings

__all__ = ["add_source_parser", "cmd_source"]


def _bounded(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse


def add_source_parser(sub: Any) -> None:
    """Register ``whk source`` on the CLI's sub-parsers."""
    p = sub.add_parser(
        "source", help="consume a Redis stream or RabbitMQ queue into WHK events (whk.emit), ack after commit"
    )
    p.add_argument(
        "url",
        help="redis[s]://[user:password@]host[:port]/<stream>[?db=N&maxlen=N] or "
        "amqp[s]://[user:password@]host[:port]/<vhost>?queue=Q[&prefetch=N&dead_letter_queue=D]",
    )
    p.add_argument("--group", default=None, help="Redis: consumer group (created when missing); required")
    p.add_argument("--event-type", default=None, help="event type of every message (else its 'type' field)")
    p.add_argument("--consumer", default=None, help="consumer name (default: host-pid)")
    p.add_argument("--dead-stream", default=None, help="dead-letter stream (default: <stream>:dead)")
    p.add_argument("--batch", type=_bounded(1, 10_000), default=100, help="messages per transaction")
    p.add_argument("--block-ms", type=_bounded(1, 60_000), default=1000, help="wait for new messages (ms)")
    p.add_argument(
        "--claim-idle-ms",
        type=_bounded(1, 86_400_000),
        default=60_000,
        help="take over other consumers' entries pending this long (XAUTOCLAIM)",
    )
    p.add_argument("--from-start", action="store_true", help="a new group starts at the stream's beginning")
    p.add_argument("--max-messages", type=_bounded(1, 2**31), default=None, help="stop after this many")
    p.set_defaults(func=cmd_source)


async def _run(settings: Settings, args: argparse.Namespace) -> SourceStats:
    if args.url.lower().startswith(("amqp://", "amqps://")):
        return await _run_amqp(settings, args)
    if args.group is None:
        raise WhkError("whk source redis://…: --group is required", hint="e.g. --group whk")
    try:
        target = parse_redis_url(args.url, allow_login=True)
    except QueueUrlError as exc:
        raise WhkError(f"source URL: {exc}", hint="e.g. redis://127.0.0.1:6379/orders") from exc
    broker = RedisStreamSource(
        target,
        group=args.group,
        consumer=args.consumer or f"{socket.gethostname()}-{os.getpid()}",
        dead_stream=args.dead_stream,
        block_ms=args.block_ms,
        claim_idle_ms=args.claim_idle_ms,
        start_id="0" if args.from_start else "$",
    )
    return await _serve(settings, args, broker, f"{target.stream} → whk.emit (group {args.group})")


async def _run_amqp(settings: Settings, args: argparse.Namespace) -> SourceStats:
    try:
        source = parse_amqp_source(args.url)
    except QueueUrlError as exc:
        raise WhkError(f"source URL: {exc}", hint="e.g. amqp://127.0.0.1:5672/%2F?queue=erp-in") from exc
    broker = AmqpQueueSource(source, wait_s=args.block_ms / 1000.0)
    return await _serve(
        settings, args, broker, f"queue {source.queue} → whk.emit (dead letters: {source.dead_letter_queue})"
    )


async def _serve(
    settings: Settings, args: argparse.Namespace, broker: OpenableSource, banner: str
) -> SourceStats:
    """Consume until SIGTERM/SIGINT (or --max-messages): one database session, the broker opened after
    the schema check, both closed at the end."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    conn = await aconnect(settings, autocommit=True)
    try:
        await acheck_schema_version(conn)
        await broker.open()
        print(f"whk source: {banner}", file=sys.stderr, flush=True)
        return await run_source(
            broker, conn, stop, event_type=args.event_type, batch=args.batch, max_messages=args.max_messages
        )
    finally:
        await broker.aclose()
        await conn.close()


def cmd_source(settings: Settings, args: argparse.Namespace) -> int:
    stats = asyncio.run(_run(settings, args))
    print(
        f"whk source: {stats.messages} messages, {stats.emitted} events, {stats.rejected} dead-lettered",
        file=sys.stderr,
    )
    return 0
