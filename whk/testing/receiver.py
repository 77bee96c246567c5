"""A local webhook receiver for tests: verifies Standard Webhooks signatures, records every request, and
can play a scripted scenario (``whk.mockscenario``: the same format as WHK's development mock endpoints).

It is a ``ThreadingHTTPServer`` on 127.0.0.1 in a background thread, so it serves while a synchronous test
waits, and an asynchronous test awaits the ``*_async`` helpers (which wait in a worker thread, leaving the
event loop free for an in-process WHK). Waits have deadlines and wake on each request; nothing polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import msgspec

from whk.mockscenario import Reply, Scenario, decode_scenario, reply_for
from whk.signing import SigningError, decode_secret, generate_secret, verify
from whk.testing.remote import ConnectedWebhook, connect_webhook

__all__ = ["Received", "ReceivedRequest", "Receiver", "Where"]

MAX_BODY_BYTES: Final = 16 * 1024 * 1024
DEFAULT_TIMEOUT: Final = 10.0

# ``where=``: a dict of expected values (dotted paths into the envelope, e.g. {"data.new.id": 7}) or a
# predicate over the parsed envelope.
Where = Mapping[str, Any] | Callable[[Any], bool] | None


def _path_get(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(doc, Mapping) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise KeyError(path)
    return doc


def _matches(doc: Any, where: Where) -> bool:
    if where is None:
        return True
    if callable(where):
        return bool(where(doc))
    for path, expected in where.items():
        try:
            if _path_get(doc, path) != expected:
                return False
        except KeyError:
            return False
    return True


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as it arrived, with the signature verdict and the answer given."""

    n: int
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    received_at: float
    verified: bool
    reason: str | None
    replied_status: int

    @property
    def msg_id(self) -> str | None:
        return self.headers.get("webhook-id")

    @property
    def event(self) -> Any:
        """The parsed JSON body (None when it is not JSON)."""
        try:
            return msgspec.json.decode(self.body)
        except msgspec.DecodeError:
            return None

    @property
    def event_type(self) -> str | None:
        doc = self.event
        return doc.get("type") if isinstance(doc, dict) else None

    def signed_by(self, secret: str, *, tolerance: int = 300) -> str | None:
        """None when this request verifies with ``secret`` (timestamp judged at arrival), else why not."""
        try:
            verify(
                [decode_secret(secret)],
                self.headers.get("webhook-id", ""),
                self.headers.get("webhook-timestamp", ""),
                self.body,
                self.headers.get("webhook-signature", ""),
                now=int(self.received_at),
                tolerance=tolerance,
            )
        except SigningError as exc:
            return f"{exc.reason}: {exc.message}"
        return None

    def describe(self) -> str:
        verdict = "verified" if self.verified else f"NOT verified ({self.reason})"
        return f"#{self.n} {self.method} {self.path} {self.event_type} -> {self.replied_status}, {verdict}"


class Received(Sequence[ReceivedRequest]):
    """What a receiver got, in arrival order, with the plugin's assertions."""

    def __init__(self, items: Sequence[ReceivedRequest]) -> None:
        self._items = tuple(items)

    def __getitem__(self, index: Any) -> Any:
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return "Received([" + ", ".join(r.describe() for r in self._items) + "])"

    def summary(self) -> str:
        return "\n".join(r.describe() for r in self._items) or "(nothing received)"

    def events(self, event_type: str | None = None, where: Where = None) -> list[ReceivedRequest]:
        """Requests whose envelope has ``event_type`` (any when None) and matches ``where``."""
        return [
            r
            for r in self._items
            if (event_type is None or r.event_type == event_type) and _matches(r.event, where)
        ]

    def accepted(self) -> list[ReceivedRequest]:
        """Requests answered 2xx, first arrival of each webhook-id (what a receiver processed)."""
        seen: set[str | None] = set()
        out: list[ReceivedRequest] = []
        for r in self._items:
            if 200 <= r.replied_status < 300 and (r.msg_id is None or r.msg_id not in seen):
                seen.add(r.msg_id)
                out.append(r)
        return out

    def assert_event(
        self, event_type: str, where: Where = None, *, count: int | None = None
    ) -> ReceivedRequest:
        """The first request carrying ``event_type`` that matches ``where`` (``count``: exactly that many)."""
        found = self.events(event_type, where)
        if not found:
            raise AssertionError(f"no {event_type} event matching {where!r} was received:\n{self.summary()}")
        if count is not None and len(found) != count:
            raise AssertionError(
                f"{len(found)} {event_type} events match {where!r}, expected {count}:\n{self.summary()}"
            )
        return found[0]

    def assert_signed_by(self, secret: str, *, tolerance: int = 300) -> None:
        """Every request carries a valid signature by ``secret`` (timestamps judged at arrival)."""
        if not self._items:
            raise AssertionError("nothing was received, so nothing is signed")
        problems = [
            f"{r.describe()}: {why}" for r in self._items if (why := r.signed_by(secret, tolerance=tolerance))
        ]
        if problems:
            raise AssertionError("requests not signed by the secret:\n" + "\n".join(problems))

    def assert_in_order(
        self, *, key: str | Callable[[Any], Any], by: str | Callable[[Any], Any] = "timestamp"
    ) -> None:
        """Per ``key`` (a dotted path into the envelope, or a function of it), the accepted events arrived
        in ascending ``by`` (default: the envelope's timestamp). Retries and duplicates are ignored: only
        the first 2xx answer per webhook-id counts."""

        def getter(spec: str | Callable[[Any], Any]) -> Callable[[Any], Any]:
            return spec if callable(spec) else (lambda doc: _path_get(doc, spec))

        key_of, by_of = getter(key), getter(by)
        last: dict[Any, tuple[Any, ReceivedRequest]] = {}
        for r in self.accepted():
            doc = r.event
            k, v = key_of(doc), by_of(doc)
            k = msgspec.json.encode(k)  # hashable whatever the key's JSON type
            if k in last and v < last[k][0]:
                raise AssertionError(
                    f"out of order for key {k.decode()}: {r.describe()} ({v!r}) arrived after "
                    f"{last[k][1].describe()} ({last[k][0]!r})"
                )
            last[k] = (v, r)


@dataclass
class _State:
    items: list[ReceivedRequest] = field(default_factory=list)
    scenario: Scenario | None = None
    played: int = 0


class Receiver:
    """An HTTP receiver on 127.0.0.1 with its own signing secret (``url``, ``secret``).

    Every request (any method, any path) is verified against ``secrets`` within ``tolerance`` seconds and
    recorded. Without a scenario it answers 200 to a verified request and 401 to the rest (what a correct
    receiver does); ``play(scenario)`` scripts the answers instead (verification is still recorded).
    """

    def __init__(
        self,
        *,
        secret: str | None = None,
        tolerance: int = 300,
        extra_secrets: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secret = secret or generate_secret()
        self.extra_secrets = tuple(extra_secrets)
        self.tolerance = tolerance
        self._keys: list[bytes] = [decode_secret(s) for s in (self.secret, *self.extra_secrets)]
        self._clock = clock
        self._cond = threading.Condition()
        self._state = _State()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="whk-receiver", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The receiver's base URL (any path below it is received too)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def use_secret(self, secret: str, *extra: str) -> None:
        """Verify with ``secret`` (and ``extra`` ones, e.g. during a rotation) from now on."""
        keys = [decode_secret(s) for s in (secret, *extra)]
        with self._cond:
            self.secret, self.extra_secrets, self._keys = secret, tuple(extra), keys

    def connect(
        self, base_url: str, api_key: str, *, path: str = "", **webhook_fields: Any
    ) -> ConnectedWebhook:
        """Point a new webhook of the WHK at ``base_url`` at this receiver (``connect_webhook``) and
        verify with the secret WHK signs it with. Blocking: from an async test with WHK in the same
        event loop, call it through ``asyncio.to_thread``."""
        hook = connect_webhook(base_url, api_key, self.url + path.lstrip("/"), **webhook_fields)
        self.use_secret(hook.secret)
        return hook

    # -- scenario -------------------------------------------------------------------------------------
    def play(self, scenario: Scenario | str | bytes | list[Any]) -> None:
        """Answer the next requests by ``scenario`` (``[503, 503, 200]``, a JSON scenario or a
        ``Scenario``); its request count starts at 0 now."""
        decoded = decode_scenario(scenario)
        with self._cond:
            self._state.scenario = decoded
            self._state.played = 0

    def clear(self) -> None:
        """Forget what was received (the scenario stays, its count restarts)."""
        with self._cond:
            self._state.items.clear()
            self._state.played = 0

    # -- reading and waiting --------------------------------------------------------------------------
    @property
    def received(self) -> Received:
        with self._cond:
            return Received(self._state.items)

    def wait_until(
        self, predicate: Callable[[Received], bool], *, timeout: float = DEFAULT_TIMEOUT, what: str = ""
    ) -> Received:
        """Block until ``predicate(received)`` holds (re-checked on every request) or fail at the deadline."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                current = Received(self._state.items)
                if predicate(current):
                    return current
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {what or 'a condition'}; received:\n"
                        + current.summary()
                    )
                self._cond.wait(remaining)

    def wait_for(self, count: int, *, timeout: float = DEFAULT_TIMEOUT) -> Received:
        """Wait until at least ``count`` requests arrived."""
        return self.wait_until(lambda r: len(r) >= count, timeout=timeout, what=f"{count} requests")

    def wait_for_event(
        self, event_type: str, where: Where = None, *, count: int = 1, timeout: float = DEFAULT_TIMEOUT
    ) -> ReceivedRequest:
        """Wait until ``count`` accepted (2xx) ``event_type`` events matching ``where`` arrived; the first."""

        def enough(r: Received) -> bool:
            return (
                len([x for x in r.accepted() if x.event_type == event_type and _matches(x.event, where)])
                >= count
            )

        got = self.wait_until(
            enough, timeout=timeout, what=f"{count} accepted {event_type} matching {where!r}"
        )
        return next(x for x in got.accepted() if x.event_type == event_type and _matches(x.event, where))

    async def wait_until_async(
        self, predicate: Callable[[Received], bool], *, timeout: float = DEFAULT_TIMEOUT, what: str = ""
    ) -> Received:
        """``wait_until`` for async tests: the event loop keeps running meanwhile."""
        return await asyncio.to_thread(self.wait_until, predicate, timeout=timeout, what=what)

    async def wait_for_async(self, count: int, *, timeout: float = DEFAULT_TIMEOUT) -> Received:
        return await asyncio.to_thread(self.wait_for, count, timeout=timeout)

    async def wait_for_event_async(
        self, event_type: str, where: Where = None, *, count: int = 1, timeout: float = DEFAULT_TIMEOUT
    ) -> ReceivedRequest:
        return await asyncio.to_thread(self.wait_for_event, event_type, where, count=count, timeout=timeout)

    # -- the server side ------------------------------------------------------------------------------
    def _verdict(self, headers: Mapping[str, str], body: bytes, now: float) -> tuple[bool, str | None]:
        if "webhook-signature" not in headers:
            return False, "unsigned: no webhook-signature header"
        try:
            verify(
                self._keys,
                headers.get("webhook-id", ""),
                headers.get("webhook-timestamp", ""),
                body,
                headers["webhook-signature"],
                now=int(now),
                tolerance=self.tolerance,
            )
        except SigningError as exc:
            return False, f"{exc.reason}: {exc.message}"
        return True, None

    def _record(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        now = self._clock()
        with self._cond:
            verified, reason = self._verdict(headers, body, now)
            scenario = self._state.scenario
            if scenario is not None:
                reply = reply_for(scenario, self._state.played)
                self._state.played += 1
            else:
                reply = Reply(status=200 if verified else 401)
            self._state.items.append(
                ReceivedRequest(
                    n=len(self._state.items),
                    method=method,
                    path=path,
                    headers=headers,
                    body=body,
                    received_at=now,
                    verified=verified,
                    reason=reason,
                    replied_status=reply.status,
                )
            )
            self._cond.notify_all()
        return reply

    def _pause(self, ms: int) -> bool:
        """Wait ``ms`` as the scenario asks; False when the receiver is closing."""
        return not self._closing.wait(ms / 1000) if ms else True


def _handler_for(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY_BYTES:
                self.send_error(413)
                return
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = receiver._record(self.command, self.path, headers, body)
            if not receiver._pause(reply.delay_ms):
                return
            payload = msgspec.json.encode({"status": reply.status})
            self.send_response(reply.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            pieces = list(_pieces(payload, 10 if reply.drip_ms else 1))
            for i, piece in enumerate(pieces):
                if i and not receiver._pause(reply.drip_ms // len(pieces)):
                    return
                with contextlib.suppress(OSError):
                    self.wfile.write(piece)
                    self.wfile.flush()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815 - http.server's names

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the recorded requests are the log."""

    return Handler


def _pieces(payload: bytes, n: int) -> Iterator[bytes]:
    size = max(1, -(-len(payload) // n))
    for i in range(0, len(payload), size):
        yield payload[i : i + size]
