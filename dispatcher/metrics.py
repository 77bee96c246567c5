"""The dispatcher's own Prometheus metrics (prometheus-client), served on WHK_DISPATCHER_METRICS_PORT.

Counters and histograms live in the process that sees the events: one ``CollectorRegistry`` per
dispatcher (no global registry, so several engines in one process — tests, benchmarks — never collide).
``serve`` exposes it on ``/metrics`` from prometheus-client's own HTTP server thread, so a scrape never
runs on the delivery event loop; the endpoint is unauthenticated, bound to WHK_DISPATCHER_METRICS_HOST
(loopback by default) and off unless a port is set.

Labels stay bounded: ``webhook_id`` (one per webhook), ``outcome`` (the six kinds of
``dispatcher.classify``) and a breaker's ``from_state``/``to_state`` (three states) — never an event or
delivery id. docs/operations.md ("Metrics reference")
lists every series and what 10,000 webhooks cost.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from threading import Thread
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

__all__ = ["LATENCY_BUCKETS", "DispatcherMetrics", "event_time", "serve"]

# Seconds. Attempts: a healthy receiver answers in milliseconds, the attempt deadline is 15 s by default.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Commit to delivery: milliseconds when keeping up, minutes to hours through retries.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 1800.0, 7200.0)
ROUND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_TS_KEY = '"timestamp": "'


def event_time(payload: str) -> float | None:
    """The event's commit time (epoch seconds) from its envelope's ``timestamp``, or None.

    The envelope is jsonb text, whose keys come out shortest first: ``timestamp`` (9 characters) is the
    last key, so only the tail is searched — no JSON parse of a possibly large body on the hot path."""
    at = payload.rfind(_TS_KEY, max(0, len(payload) - 64))
    if at < 0:
        return None
    start = at + len(_TS_KEY)
    end = payload.find('"', start)
    try:
        return datetime.fromisoformat(payload[start:end]).timestamp()
    except ValueError:
        return None


class DispatcherMetrics:
    """The dispatcher's counters, gauges and histograms (names in docs/operations.md)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.attempts = Counter(
            "whk_dispatcher_attempts",
            "HTTP attempts finished, by webhook and outcome (delivered, awaiting_ack, retry, throttle, gone, "
            "blocked).",
            ["webhook_id", "outcome"],
            registry=r,
        )
        self.attempt_seconds = Histogram(
            "whk_dispatcher_attempt_duration_seconds",
            "Duration of one HTTP attempt (connect to last byte), by outcome.",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "whk_dispatcher_commit_to_delivery_seconds",
            "From the event's commit (its envelope timestamp) to the receiver's 2xx, per delivered event.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("whk_dispatcher_in_flight", "HTTP requests on the wire now.", registry=r)
        self.rounds = Counter("whk_dispatcher_rounds", "Route-and-claim rounds.", registry=r)
        self.round_seconds = Histogram(
            "whk_dispatcher_claim_duration_seconds",
            "Duration of one route-and-claim round trip to PostgreSQL.",
            buckets=ROUND_BUCKETS,
            registry=r,
        )
        self.routed = Counter(
            "whk_dispatcher_routed_events", "Outbox events routed to deliveries.", registry=r
        )
        self.claimed = Counter("whk_dispatcher_claimed_deliveries", "Deliveries claimed.", registry=r)
        self.recorded = Counter(
            "whk_dispatcher_recorded_deliveries", "Delivery outcomes written to PostgreSQL.", registry=r
        )
        self.breaker_transitions = Counter(
            "whk_dispatcher_breaker_transitions",
            "Circuit-breaker transitions made by this dispatcher's outcome writes, by webhook: closed or "
            "half_open to open, half_open or open to closed (open to half_open happens at the claim).",
            ["webhook_id", "from_state", "to_state"],
            registry=r,
        )
        self.record_seconds = Histogram(
            "whk_dispatcher_record_duration_seconds",
            "Duration of one write of a group of outcomes.",
            buckets=ROUND_BUCKETS,
            registry=r,
        )
        # Labelled children looked up once (``labels()`` costs ~2 us a call; ~5 per delivery otherwise):
        # bounded like the series themselves, one per webhook and outcome.
        self._attempt_children: dict[tuple[int, str], tuple[Counter, Histogram]] = {}

    def track_in_flight(self, read: Callable[[], float]) -> None:
        self.in_flight.set_function(read)

    def attempt(self, webhook_id: int, outcome: str, duration_ms: float | None) -> None:
        children = self._attempt_children.get((webhook_id, outcome))
        if children is None:
            children = self._attempt_children[(webhook_id, outcome)] = (
                self.attempts.labels(webhook_id=str(webhook_id), outcome=outcome),
                self.attempt_seconds.labels(outcome=outcome),
            )
        children[0].inc()
        if duration_ms is not None:
            children[1].observe(duration_ms / 1000.0)

    def breaker_transition(self, webhook_id: int, from_state: str, to_state: str) -> None:
        self.breaker_transitions.labels(
            webhook_id=str(webhook_id), from_state=from_state, to_state=to_state
        ).inc()

    def delivered(self, payloads: Iterable[str], now: float) -> None:
        observe = self.latency.observe
        for payload in payloads:
            at = event_time(payload)
            if at is not None:
                observe(max(0.0, now - at))

    def round(self, seconds: float, routed: int, claimed: int) -> None:
        self.rounds.inc()
        self.round_seconds.observe(seconds)
        if routed:
            self.routed.inc(routed)
        if claimed:
            self.claimed.inc(claimed)

    @contextlib.contextmanager
    def recording(self, deliveries: int) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.record_seconds.observe(time.perf_counter() - started)
            self.recorded.inc(deliveries)


def serve(metrics: DispatcherMetrics, host: str, port: int) -> Callable[[], None]:
    """Serve ``/metrics`` on ``host:port`` (a daemon thread); returns the function that stops it."""
    # The *_created series (one per labelled child) would double the series count for nothing a
    # dashboard uses; prometheus-client only offers a process-wide switch, and this is the process.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    server: Any
    thread: Thread
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
