"""The operations worker's own Prometheus metrics (prometheus-client), served on WHK_WORKER_METRICS_PORT.

The worker is the process that sends alert notifications and evaluates the rules, so it counts them
(the dispatcher's ``dispatcher.metrics`` does the same for deliveries; ``ops`` and ``dispatcher`` are
independent applications, so the few lines of ``serve`` are their own here). One ``CollectorRegistry``
per worker; ``serve`` exposes it on ``/metrics`` from prometheus-client's HTTP server thread, never on
the job loop. The endpoint is unauthenticated, bound to WHK_WORKER_METRICS_HOST (loopback by default)
and off unless a port is set.

Labels stay bounded: channel type (slack, pagerduty, webhook, email), notice kind (whk.notice.Kind) and
result (sent, retry, failed) — never an alert, channel or activation id. docs/operations.md ("Metrics
reference") lists the series.
"""

from __future__ import annotations

from collections.abc import Callable
from threading import Thread
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics, start_http_server

__all__ = ["OpsMetrics", "serve"]

Result = Literal["sent", "retry", "failed"]


class OpsMetrics:
    """The worker's counters (names in docs/operations.md)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.notifications = Counter(
            "whk_worker_notifications",
            "Alert notification attempts by channel type, notice kind and result: sent (the channel "
            "accepted it), retry (failed, tried again later), failed (given up: recorded as failed in the "
            "alert history).",
            ["channel_type", "kind", "result"],
            registry=r,
        )
        self.evaluations = Counter(
            "whk_worker_alert_evaluations",
            "Alert evaluation runs of this worker, by result (ok: finished, error: raised).",
            ["result"],
            registry=r,
        )
        self.state_changes = Counter(
            "whk_worker_alert_state_changes",
            "Alert rules whose state an evaluation of this worker changed (ok, pending, firing, resolved).",
            registry=r,
        )

    def notification(self, channel_type: str, kind: str, result: Result) -> None:
        self.notifications.labels(channel_type=channel_type, kind=kind, result=result).inc()

    def evaluation(self, ok: bool, changed: int = 0) -> None:
        self.evaluations.labels(result="ok" if ok else "error").inc()
        if changed:
            self.state_changes.inc(changed)


def serve(metrics: OpsMetrics, host: str, port: int) -> Callable[[], None]:
    """Serve ``/metrics`` on ``host:port`` (a daemon thread); returns the function that stops it."""
    # No *_created series: prometheus-client only offers a process-wide switch, and this is the process.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    server: Any
    thread: Thread
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
