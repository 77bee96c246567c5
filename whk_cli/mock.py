"""``whk mock``: read, clear, tail and script the development mock endpoints from a terminal.

    whk mock tail orders                     # follow new requests as they arrive (Ctrl-C stops)
    whk mock list orders --limit 20          # the newest requests
    whk mock clear orders
    whk mock scenario orders '[503, 503, 200]'   # or a JSON scenario; --clear drops it; no value shows it

It speaks the API over HTTP (httpx), not SQL: a developer's terminal usually has an API key and the URL of
``make up``, not the database's credentials, and the API applies the same admin check, masking and
development-only 404 as for every other client. ``--api`` defaults to ``WHK_API_URL`` or the local API
(``WHK_API_HOST``/``WHK_API_PORT``), ``--key`` to ``WHK_API_KEY`` (an admin key: ``whk apikey create
--admin``). ``tail`` asks for what came after the last id it printed, every ``--interval`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import httpx
import msgspec

from whk.errors import WhkError
from whk.mockscenario import decode_scenario
from whk.settings import Settings

__all__ = ["add_mock_parser", "format_request", "tail"]


class MockCommandError(WhkError):
    """The API refused or could not be reached."""


def _base_url(settings: Settings, given: str | None) -> str:
    if given:
        return given.rstrip("/")
    env = os.environ.get("WHK_API_URL")
    if env:
        return env.rstrip("/")
    host = settings.api.host if settings.api.host not in ("0.0.0.0", "::", "") else "127.0.0.1"  # noqa: S104
    return f"http://{host}:{settings.api.port}"


def _client(settings: Settings, args: argparse.Namespace) -> httpx.Client:
    key = args.key or os.environ.get("WHK_API_KEY")
    if not key:
        raise MockCommandError("an admin API key is needed", hint="pass --key or set WHK_API_KEY")
    return httpx.Client(
        base_url=_base_url(settings, args.api) + "/api/whk/dev/mock",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        trust_env=False,
    )


def _checked(response: httpx.Response) -> Any:
    if response.is_error:
        raise MockCommandError(f"the API answered {response.status_code}: {response.text[:500]}")
    return response.json() if response.content else None


def format_request(item: dict[str, Any]) -> str:
    """One line per received request: id, time, method, answer, signature verdict, size, event type."""
    ok = item.get("signature_ok")
    if ok is True:
        signature = f"signature ok (webhook {item.get('webhook_id')})"
    elif ok is False:
        signature = f"signature FAILED: {item.get('signature_reason')}"
    else:
        signature = "no webhook targets this mock"
    try:
        event = json.loads(item.get("body") or "null")
    except ValueError:
        event = None
    kind = event.get("type") if isinstance(event, dict) else None
    return (
        f"#{item['id']} {item['received_at']} {item['method']} -> {item['replied_status']}  "
        f"{kind or '-'}  {item['body_size']} B  {signature}"
    )


def tail(
    fetch: Callable[[int], list[dict[str, Any]]],
    *,
    start: int,
    stop: threading.Event,
    interval: float,
    count: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield requests with an id above ``start``, oldest first, until ``stop`` or ``count`` of them."""
    last, seen = start, 0
    while not stop.is_set():
        for item in fetch(last):
            last = max(last, int(item["id"]))
            yield item
            seen += 1
            if count is not None and seen >= count:
                return
        stop.wait(interval)


def cmd_mock(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    with _client(settings, args) as client:
        name = args.name
        if args.mock_command == "list":
            for item in reversed(_checked(client.get(f"/{name}/requests", params={"limit": args.limit}))):
                print(format_request(item), file=out)
        elif args.mock_command == "clear":
            _checked(client.delete(f"/{name}/requests"))
            print(f"mock {name}: cleared", file=out)
        elif args.mock_command == "scenario":
            if args.clear:
                _checked(client.delete(f"/{name}/scenario"))
                print(f"mock {name}: scenario dropped", file=out)
            elif args.scenario:
                try:
                    scenario = decode_scenario(args.scenario)
                except ValueError as exc:
                    raise MockCommandError(f"bad scenario: {exc}") from exc
                body = _checked(client.put(f"/{name}/scenario", content=msgspec.json.encode(scenario)))
                print(json.dumps(body, indent=1), file=out)
            else:
                print(json.dumps(_checked(client.get(f"/{name}/scenario")), indent=1), file=out)
        else:  # tail
            newest = _checked(client.get(f"/{name}/requests", params={"limit": 1}))
            start = int(newest[0]["id"]) if newest and not args.from_start else 0

            def fetch(after: int) -> list[dict[str, Any]]:
                items: list[dict[str, Any]] = _checked(
                    client.get(f"/{name}/requests", params={"after": after, "limit": 200})
                )
                return items

            print(f"following mock {name} (Ctrl-C stops)", file=out, flush=True)
            for item in tail(
                fetch, start=start, stop=threading.Event(), interval=args.interval, count=args.count
            ):
                print(format_request(item), file=out, flush=True)
    return 0


def add_mock_parser(sub: Any) -> None:
    """Register ``whk mock …`` on the CLI's sub-parsers."""
    mock = sub.add_parser("mock", help="development mock endpoints: list, clear, tail, script (over the API)")
    mock.set_defaults(func=cmd_mock)
    msub = mock.add_subparsers(dest="mock_command", required=True, metavar="ACTION")
    actions = {
        "tail": "follow new requests as they arrive",
        "list": "print the newest requests",
        "clear": "forget what the mock received",
        "scenario": "show, set ('[503, 503, 200]' or a JSON scenario) or --clear the mock's scenario",
    }
    for action, help_text in actions.items():
        p = msub.add_parser(action, help=help_text)
        p.add_argument("name", help="mock name (1-64 of A-Z a-z 0-9 _ -)")
        p.add_argument("--api", default=None, help="API base URL (default: WHK_API_URL or the local API)")
        p.add_argument("--key", default=None, help="admin API key (default: WHK_API_KEY)")
        if action == "tail":
            p.add_argument("--interval", type=_interval, default=0.5, help="seconds between polls (0.1-60)")
            p.add_argument("--count", type=int, default=None, help="stop after this many requests")
            p.add_argument("--from-start", action="store_true", help="print what is already stored first")
        elif action == "list":
            p.add_argument("--limit", type=int, default=50, choices=range(1, 201), metavar="1-200")
        elif action == "scenario":
            p.add_argument("scenario", nargs="?", default=None)
            p.add_argument("--clear", action="store_true")


def _interval(raw: str) -> float:
    value = float(raw)
    if not 0.1 <= value <= 60:
        raise argparse.ArgumentTypeError("between 0.1 and 60 seconds")
    return value
