"""Scripted answers of a mock receiver: the development mock endpoints (``/api/whk/dev/mock/{name}``) and
the pytest plugin's ``whk_receiver`` play the same scenarios, so a retry rehearsed in an integrator's
tests behaves the same against WHK's own mock.

A scenario (JSON)::

    {"steps": [503, 503, {"status": 200, "delay_ms": 300}],   # the first requests, in order
     "then": 200,                                              # every request after the steps
     "fail_rate": 0.2, "fail_status": 503, "seed": 7}          # ...of which 20 % fail, reproducibly

A step is a status, or ``{"status", "delay_ms", "drip_ms"}``: wait ``delay_ms`` before answering, then
spread the body over ``drip_ms`` (a slow, dripping receiver, to rehearse timeouts). Request ``n``
(0-based, counted since the scenario was set) gets ``steps[n]``; after the steps it gets ``then``,
except that it fails with ``fail_status`` when ``random_unit(seed, n) < fail_rate``. The draw is a hash
of ``(seed, n)``, not a random generator's state, so every API worker (and a rerun) draws the same.

Pure code: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Final

import msgspec

__all__ = [
    "MAX_DELAY_MS",
    "MAX_STEPS",
    "Reply",
    "Scenario",
    "Step",
    "decode_scenario",
    "random_unit",
    "reply_for",
]

MAX_STEPS: Final = 100
MAX_DELAY_MS: Final = 30_000
MAX_SEED: Final = 2**31 - 1

Status = Annotated[int, msgspec.Meta(ge=200, le=599, description="HTTP status to answer with")]
DelayMs = Annotated[
    int, msgspec.Meta(ge=0, le=MAX_DELAY_MS, description="milliseconds to wait before answering")
]
DripMs = Annotated[
    int,
    msgspec.Meta(ge=0, le=MAX_DELAY_MS, description="milliseconds over which the body is sent, in pieces"),
]


class Step(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One scripted answer: ``status`` after ``delay_ms``, the body spread over ``drip_ms``."""

    status: Status = 200
    delay_ms: DelayMs = 0
    drip_ms: DripMs = 0


class Scenario(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a mock answers, request by request (see the module docstring)."""

    steps: Annotated[
        list[Status | Step],
        msgspec.Meta(max_length=MAX_STEPS, description="answers to the first requests, in order"),
    ] = msgspec.field(default_factory=list)
    then: Status | Step = 200
    fail_rate: Annotated[
        float, msgspec.Meta(ge=0.0, le=1.0, description="share of the requests after the steps that fail")
    ] = 0.0
    fail_status: Status = 503
    seed: Annotated[int, msgspec.Meta(ge=0, le=MAX_SEED, description="seed of the failure draw")] = 0


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to one request."""

    status: int
    delay_ms: int = 0
    drip_ms: int = 0


def _step(item: int | Step) -> Step:
    return Step(status=item) if isinstance(item, int) else item


def random_unit(seed: int, n: int) -> float:
    """A number in [0, 1) that depends only on ``seed`` and ``n``."""
    digest = hashlib.sha256(f"{seed}:{n}".encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def reply_for(scenario: Scenario, n: int) -> Reply:
    """The answer to request ``n`` (0-based) of ``scenario``."""
    if n < 0:
        raise ValueError(f"request numbers start at 0, not {n}")
    if n < len(scenario.steps):
        step = _step(scenario.steps[n])
        return Reply(status=step.status, delay_ms=step.delay_ms, drip_ms=step.drip_ms)
    then = _step(scenario.then)
    if scenario.fail_rate > 0 and random_unit(scenario.seed, n) < scenario.fail_rate:
        return Reply(status=scenario.fail_status, delay_ms=then.delay_ms, drip_ms=then.drip_ms)
    return Reply(status=then.status, delay_ms=then.delay_ms, drip_ms=then.drip_ms)


_DECODER: Final = msgspec.json.Decoder(Scenario)


def decode_scenario(raw: bytes | str | list[int | dict[str, int]] | Scenario) -> Scenario:
    """A scenario from JSON text, a bare list of steps (``[503, 503, 200]``) or a ``Scenario``;
    ``msgspec.ValidationError`` names the first field out of bounds."""
    if isinstance(raw, Scenario):
        return raw
    if isinstance(raw, list):
        return msgspec.convert({"steps": raw}, Scenario)
    text = raw.encode() if isinstance(raw, str) else raw
    if text.lstrip().startswith(b"["):
        return msgspec.convert({"steps": msgspec.json.decode(text)}, Scenario)
    return _DECODER.decode(text)
