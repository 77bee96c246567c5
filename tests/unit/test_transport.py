"""The transport seam (dispatcher.transport): scheme routing, one batch per loop turn, broker outcomes
classified like HTTP responses."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from dispatcher.attempt import AttemptResult, OutboundRequest
from dispatcher.classify import classify, is_failure
from dispatcher.transport import Transports, broker_ok, broker_refused, failed, signed_fields


def _req(url: str, n: int = 0) -> OutboundRequest:
    headers = [
        ("Content-Type", "application/json"),
        ("User-Agent", "t"),
        ("webhook-id", f"msg_{n}"),
        ("webhook-timestamp", "1"),
        ("webhook-signature", "v1,x"),
        ("Authorization", "Basic eDp5"),
    ]
    return OutboundRequest(method="POST", url=url, headers=headers, body=b"{}", deadline_s=1.0)


class _Http:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, req: OutboundRequest) -> AttemptResult:
        self.sent.append(req.url)
        return broker_ok("http", 0.0)


class _Queue:
    def __init__(self, *, explode: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.closed = False
        self._explode = explode

    async def send(self, requests: Sequence[OutboundRequest]) -> list[AttemptResult]:
        if self._explode:
            raise RuntimeError("bug")
        self.batches.append([r.url for r in requests])
        return [broker_ok(f"{i}-0", 0.0) for i in range(len(requests))]

    async def aclose(self) -> None:
        self.closed = True


async def test_requests_of_one_turn_reach_a_queue_transport_as_one_batch() -> None:
    http, queue = _Http(), _Queue()
    t = Transports(http, {"redis": queue, "rediss": queue})
    urls = [f"redis://h/s{i}" for i in range(5)] + ["https://h/x", "rediss://h/t"]
    results = await asyncio.gather(*(t.send(_req(u)) for u in urls))
    assert http.sent == ["https://h/x"]
    assert queue.batches == [[*urls[:5], "rediss://h/t"]]
    assert [r.body for r in results[:5]] == [b"0-0", b"1-0", b"2-0", b"3-0", b"4-0"]
    await t.aclose()
    assert queue.closed


async def test_unknown_scheme_and_transport_bugs_fail_the_attempt_not_the_dispatcher() -> None:
    t = Transports(_Http(), {"redis": _Queue(explode=True)})
    amqp = await t.send(_req("amqp://h/x"))
    assert amqp.error_class == "protocol"
    assert "amqp://" in (amqp.error_detail or "")
    bug = await t.send(_req("redis://h/s"))
    assert bug.error_class == "protocol"
    assert "RuntimeError: bug" in (bug.error_detail or "")


def test_broker_outcomes_classify_like_http() -> None:
    ok = classify(broker_ok("1-0", 0.0), require_ack=False)
    assert ok.kind == "delivered"
    assert is_failure(ok) is False
    refused = classify(broker_refused("WRONGTYPE", 0.0), require_ack=False)
    assert refused.kind == "retry"
    assert is_failure(refused) is True
    down = classify(failed("refused", "Connection refused", 0.0), require_ack=False)
    assert down.kind == "retry"
    assert is_failure(down) is True
    slow = classify(failed("timeout", "no confirm", 0.0), require_ack=False)
    assert slow.kind == "throttle"
    assert classify(failed("ssrf_blocked", "loopback", 0.0), require_ack=False).kind == "blocked"


def test_signed_fields_carry_the_signature_never_the_login() -> None:
    fields = dict(signed_fields(_req("redis://h/s", 7)))
    assert fields == {
        "webhook-id": "msg_7",
        "webhook-timestamp": "1",
        "webhook-signature": "v1,x",
        "content-type": "application/json",
    }
