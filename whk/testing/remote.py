"""Helpers for tests against a running WHK: point a webhook at a receiver, read the registered catalogue.

They speak only the public HTTP API (httpx, an API key), so they work against any WHK an integrator can
reach (``make up`` on a laptop, a staging server); nothing here touches the database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from whk.testing.receiver import Received

__all__ = [
    "ConnectedWebhook",
    "connect_webhook",
    "disconnect_webhook",
    "fetch_event_types",
    "mock_received",
    "set_mock_scenario",
    "wait_for_mock",
]


@dataclass(frozen=True, slots=True)
class ConnectedWebhook:
    """A webhook created for a test: its id, and the signing secret WHK signs its deliveries with."""

    id: int
    secret: str
    url: str


def _client(base_url: str, api_key: str) -> httpx.Client:
    return httpx.Client(
        base_url=base_url.rstrip("/"),
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
        trust_env=False,
    )


def _checked(response: httpx.Response) -> Any:
    if response.is_error:
        raise AssertionError(
            f"WHK answered {response.status_code} to {response.request.method} "
            f"{response.request.url.path}: {response.text}"
        )
    return response.json() if response.content else None


def connect_webhook(
    base_url: str,
    api_key: str,
    target_url: str,
    *,
    event_types: Sequence[str] = ("*",),
    consumer_id: int | None = None,
    name: str = "whk.testing receiver",
    **fields: Any,
) -> ConnectedWebhook:
    """Create a webhook on the WHK at ``base_url`` that delivers ``event_types`` to ``target_url``.

    ``consumer_id`` is needed with an admin key (a consumer key creates it for its own consumer);
    ``fields`` are any other fields of ``POST /api/whk/webhooks`` (``http_method``, ``retry_policy``…).
    The returned secret is what the receiver must verify with: ``Receiver(secret=hook.secret)``.
    """
    body: dict[str, Any] = {"name": name, "url": target_url, "event_types": list(event_types), **fields}
    if consumer_id is not None:
        body["consumer_id"] = consumer_id
    with _client(base_url, api_key) as client:
        created = _checked(client.post("/api/whk/webhooks", json=body))
    return ConnectedWebhook(
        id=int(created["webhook"]["id"]), secret=str(created["signing_secret"]), url=target_url
    )


def disconnect_webhook(base_url: str, api_key: str, webhook_id: int) -> None:
    """Delete a webhook created by ``connect_webhook``."""
    with _client(base_url, api_key) as client:
        _checked(client.delete(f"/api/whk/webhooks/{webhook_id}"))


def fetch_event_types(base_url: str, api_key: str) -> dict[str, Any]:
    """Every registered event type with its schema versions, in the packaged catalogue's shape."""
    out: dict[str, Any] = {}
    with _client(base_url, api_key) as client:
        cursor: str | None = None
        names: list[tuple[str, str]] = []
        while True:
            params: dict[str, Any] = {"limit": 100}
            if cursor:
                params["cursor"] = cursor
            page = _checked(client.get("/api/whk/events", params=params))
            names.extend((t["name"], t["description"]) for t in page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
        for name, description in names:
            detail = _checked(client.get(f"/api/whk/events/{name}"))
            out[name] = {
                "description": description,
                "versions": {f"{v['major']}.{v['minor']}": v["schema"] for v in detail["versions"]},
            }
    return out


def set_mock_scenario(base_url: str, api_key: str, name: str, scenario: Any) -> None:
    """Script WHK's development mock ``name`` (``[503, 503, 200]`` or a scenario object)."""
    import msgspec

    from whk.mockscenario import decode_scenario

    body = msgspec.json.encode(decode_scenario(scenario))
    with _client(base_url, api_key) as client:
        _checked(
            client.put(
                f"/api/whk/dev/mock/{name}/scenario",
                content=body,
                headers={"content-type": "application/json"},
            )
        )


def mock_received(base_url: str, api_key: str, name: str) -> Received:
    """What WHK's development mock ``name`` recorded (up to its newest 200), oldest first, as the
    plugin's ``Received``: the same assertions apply (``verified``/``reason`` are the mock's verdict)."""
    from whk.testing.receiver import Received, ReceivedRequest

    with _client(base_url, api_key) as client:
        items = _checked(client.get(f"/api/whk/dev/mock/{name}/requests", params={"limit": 200}))
    return Received(
        [
            ReceivedRequest(
                n=n,
                method=item["method"],
                path=f"/api/whk/dev/mock/{name}",
                headers=item["headers"],
                body=item["body"].encode("utf-8"),
                received_at=datetime.fromisoformat(item["received_at"]).timestamp(),
                verified=bool(item.get("signature_ok")),
                reason=item.get("signature_reason"),
                replied_status=int(item["replied_status"]),
            )
            for n, item in enumerate(reversed(items))
        ]
    )


def wait_for_mock(
    base_url: str,
    api_key: str,
    name: str,
    predicate: Callable[[Received], bool],
    *,
    timeout: float = 10.0,
    interval: float = 0.2,
) -> Received:
    """Read the mock every ``interval`` seconds until ``predicate`` holds; fail at the deadline."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        got = mock_received(base_url, api_key, name)
        if predicate(got):
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting on mock {name}; received:\n{got.summary()}"
            )
        pause.wait(interval)
