"""``/api/whk/monitoring``: health (no auth), dashboard, metrics (Prometheus text or JSON) and alerts.

Everything is read from the tables at request time. Tenant-scoped numbers (deliveries, webhooks,
breakers, attempts, alerts) are the caller's own for consumer credentials; platform-wide numbers
(dispatchers, outbox) are shown to admins only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
import psycopg
from litestar import Controller, MediaType, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema
from litestar.params import JSONBody, QueryParameter, SkipValidation
from litestar.status_codes import HTTP_201_CREATED
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from psycopg import AsyncConnection
from psycopg_pool import PoolTimeout

from api.audit import AuditLog
from api.context import settings_dependency
from api.deps import Principal, require_own_consumer
from api.errors import NotFound, Unprocessable
from api.monitoring.repository import MonitoringRepository
from api.monitoring.schemas import (
    Alert,
    AlertCondition,
    AlertCreate,
    AlertPage,
    Dashboard,
    DispatcherInfo,
    Health,
    SlackChannel,
    WebhookChannel,
)
from whk.migrate import code_version
from whk.settings import Settings
from whk.urlpolicy import check_url, policy_fingerprint

__all__ = ["MonitoringController", "breaches", "ssrf_disagreement"]

Conn = NamedDependency[AsyncConnection[Any]]
# A `whk up` refreshes its children's rows every 5 s: older rows belong to a supervisor that is gone.
SUPERVISOR_FRESH_S = 30.0
Who = NamedDependency[Principal]


def breaches(value: float | None, operator: str, threshold: float) -> bool | None:
    """Whether ``value operator threshold`` holds (None when there is no value yet)."""
    if value is None:
        return None
    return {
        ">": value > threshold,
        ">=": value >= threshold,
        "<": value < threshold,
        "<=": value <= threshold,
    }[operator]


@dataclass
class _MetricsOperation(Operation):
    """The metrics operation answers Prometheus text, or JSON with ``format=json``: document both."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse):
            ok.content = {
                **(ok.content or {}),
                "application/json": OpenAPIMediaType(schema=Schema(type=OpenAPIType.OBJECT)),
            }


class MonitoringController(Controller):
    path = "/api/whk/monitoring"
    tags = ["monitoring"]  # noqa: RUF012 - Litestar reads a class attribute
    dependencies = settings_dependency()

    def __init__(self, owner: Any) -> None:
        super().__init__(owner)
        self.repo = MonitoringRepository()
        self.audit_log = AuditLog()

    @get(
        "/health",
        operation_id="health",
        summary="Health: database, schema version, dispatcher heartbeats, oldest waiting work (no auth)",
        exclude_from_auth=True,
    )
    async def health(
        self, state: State, settings: NamedDependency[SkipValidation[Settings]]
    ) -> Response[Health]:
        expected = code_version()
        started = time.perf_counter()
        try:
            async with state.pool.connection(timeout=min(2.0, settings.core.connect_timeout)) as conn:
                row = await self.repo.health(conn)
                latency = (time.perf_counter() - started) * 1000
                dispatchers = await self.repo.dispatchers(conn)
                supervised = await self.repo.supervised(conn, SUPERVISOR_FRESH_S)
        except (psycopg.Error, PoolTimeout, OSError):
            down = Health(
                status="down",
                database="unavailable",
                database_latency_ms=None,
                schema_version=None,
                expected_schema_version=expected,
                dispatchers_alive=0,
                dispatchers=[],
                oldest_unrouted_age_s=None,
                oldest_due_delivery_age_s=None,
                oldest_pending_warn_s=0,
                problems=["the database is unreachable"],
            )
            return Response(down, status_code=503)
        lease = float(settings.dispatcher.lease_seconds)
        for d in dispatchers:
            d.alive = d.heartbeat_age_s <= lease and not d.stopping
        alive = sum(1 for d in dispatchers if d.alive)
        warn = row.oldest_pending_warn_s or 300.0
        problems: list[str] = []
        if row.schema_version != expected:
            problems.append(f"database schema is at version {row.schema_version}, this API needs {expected}")
        if alive == 0:
            problems.append("no dispatcher has sent a heartbeat within the lease")
        if row.quarantined_count:
            ids = ", ".join(str(i) for i in row.quarantined_webhooks)
            more = "" if row.quarantined_count <= len(row.quarantined_webhooks) else ", ..."
            problems.append(
                f"{row.quarantined_count} webhook(s) quarantined, not delivered until cleared: {ids}{more}"
            )
        problems.extend(ssrf_disagreement([d for d in dispatchers if d.alive], settings))
        for d in dispatchers:
            if d.alive and d.last_error:
                problems.append(f"dispatcher {d.id} is failing: {d.last_error}")
        problems.extend(
            f"`whk {p.name}` under `whk up` ({p.supervisor}) is failing: {p.crashes_in_window} crashes "
            f"within the supervisor's window, last {p.last_exit}; it is retried slowly"
            for p in supervised
            if p.state == "failing"
        )
        for label, age in (
            ("unrouted event", row.oldest_unrouted_age_s),
            ("due delivery", row.oldest_due_delivery_age_s),
        ):
            if age is not None and age > warn:
                problems.append(f"the oldest {label} has waited {age:.0f}s (> {warn:.0f}s)")
        status: Literal["ok", "degraded", "down"] = "ok"
        if row.schema_version != expected:
            status = "down"
        elif problems:
            status = "degraded"
        body = Health(
            status=status,
            database="ok",
            database_latency_ms=round(latency, 3),
            schema_version=row.schema_version,
            expected_schema_version=expected,
            dispatchers_alive=alive,
            dispatchers=dispatchers,
            oldest_unrouted_age_s=row.oldest_unrouted_age_s,
            oldest_due_delivery_age_s=row.oldest_due_delivery_age_s,
            oldest_pending_warn_s=warn,
            problems=problems,
            quarantined_webhooks=row.quarantined_webhooks,
            supervised=supervised,
        )
        return Response(body, status_code=503 if status == "down" else 200)

    @get(
        "/dashboard", operation_id="dashboard", summary="Main dashboard: volumes, failures, breakers, alerts"
    )
    async def dashboard(self, conn: Conn, principal: Who) -> Dashboard:
        tenant = principal.tenant_filter()
        attempts = await self.repo.attempts(conn, tenant, 3600)
        ok = sum(a.n for a in attempts if a.status == "delivered")
        total = sum(a.n for a in attempts)
        alerts = await self.repo.alerts(
            conn, tenant=tenant, state="firing", enabled=None, after_id=None, limit=1000
        )
        admin = tenant is None
        dispatchers = await self.repo.dispatchers(conn) if admin else []
        return Dashboard(
            generated_at=datetime.now(UTC),
            deliveries_by_status=await self.repo.counts(conn, "delivery_status_counts", tenant),
            webhooks_by_status=await self.repo.counts(conn, "webhook_status_counts", tenant),
            breakers=await self.repo.counts(conn, "breaker_counts", tenant),
            attempts_last_hour=attempts,
            success_rate_last_hour=None if total == 0 else round(ok / total, 6),
            top_failing_webhooks=await self.repo.top_failing(conn, tenant),
            recent_dead_letters=await self.repo.recent_dead(conn, tenant),
            firing_alerts=len(alerts),
            dispatchers_alive=len(dispatchers) if admin else None,
            outbox_pending=await self.repo.outbox_pending(conn) if admin else None,
        )

    @get(
        "/metrics",
        operation_id="metrics",
        summary="Metrics in Prometheus text format (format=json for JSON)",
        media_type=MediaType.TEXT,
        operation_class=_MetricsOperation,
    )
    async def metrics(
        self,
        conn: Conn,
        principal: Who,
        settings: NamedDependency[SkipValidation[Settings]],
        output: Annotated[Literal["prometheus", "json"], QueryParameter(name="format")] = "prometheus",
    ) -> Response[Any]:
        tenant = principal.tenant_filter()
        deliveries = await self.repo.counts(conn, "delivery_status_counts", tenant)
        webhooks = await self.repo.counts(conn, "webhook_status_counts", tenant)
        breakers = await self.repo.counts(conn, "breaker_counts", tenant)
        attempts = await self.repo.attempts(conn, tenant, 300)
        data: dict[str, Any] = {
            "deliveries": deliveries,
            "webhooks": webhooks,
            "breakers": breakers,
            "attempts_5m": [msgspec.to_builtins(a) for a in attempts],
        }
        if tenant is None:
            row = await self.repo.health(conn)
            dispatchers = await self.repo.dispatchers(conn)
            lease = float(settings.dispatcher.lease_seconds)
            data["outbox_pending"] = await self.repo.outbox_pending(conn)
            data["oldest_unrouted_age_s"] = row.oldest_unrouted_age_s
            data["oldest_due_delivery_age_s"] = row.oldest_due_delivery_age_s
            data["dispatchers_alive"] = sum(
                1 for d in dispatchers if d.heartbeat_age_s <= lease and not d.stopping
            )
            data["schema_version"] = row.schema_version
        if output == "json":
            return Response(data, media_type=MediaType.JSON)
        return Response(_prometheus(data), media_type=CONTENT_TYPE_LATEST)

    @get("/alerts", operation_id="listAlerts", summary="Alerts with their metric's current value")
    async def list_alerts(
        self,
        conn: Conn,
        principal: Who,
        alert_state: Annotated[Literal["ok", "firing"] | None, QueryParameter(name="state")] = None,
        enabled: Annotated[bool | None, QueryParameter()] = None,
        breaching_only: Annotated[bool, QueryParameter()] = False,
        after_id: Annotated[int | None, QueryParameter(ge=1, le=9223372036854775807)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    ) -> AlertPage:
        rows = await self.repo.alerts(
            conn,
            tenant=principal.tenant_filter(),
            state=alert_state,
            enabled=enabled,
            after_id=after_id,
            limit=limit + 1,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        for alert in rows:
            await self._evaluate(conn, alert)
        items = [a for a in rows if a.breaching] if breaching_only else rows
        return AlertPage(items=items, next_after_id=rows[-1].id if more and rows else None)

    @post("/alerts", operation_id="createAlert", summary="Create an alert", status_code=HTTP_201_CREATED)
    async def create_alert(
        self,
        conn: Conn,
        principal: Who,
        settings: NamedDependency[SkipValidation[Settings]],
        data: JSONBody[AlertCreate],
    ) -> Alert:
        tenant = principal.tenant_filter()
        consumer_id = data.consumer_id if tenant is None else tenant
        require_own_consumer(principal, data.consumer_id)
        errors: list[dict[str, str]] = []
        if data.condition.webhook_id is not None:
            owner = await self.repo.webhook_owner(conn, data.condition.webhook_id)
            if owner is None or (tenant is not None and owner != tenant):
                raise NotFound(f"webhook {data.condition.webhook_id} not found")
            if consumer_id is not None and owner != consumer_id:
                errors.append(
                    {"pointer": "/condition/webhook_id", "message": "the webhook belongs to another consumer"}
                )
        steps = [("/channels", data.channels)] + [
            (f"/escalation/{i}/channels", s.channels) for i, s in enumerate(data.escalation)
        ]
        for base, channels in steps:
            for i, ch in enumerate(channels):
                rule = (
                    check_url(ch.target, settings.core.allow_private_cidrs)
                    if isinstance(ch, WebhookChannel | SlackChannel)
                    else None
                )
                if rule is not None:
                    message = f"URL refused by the SSRF policy: {rule}"
                    errors.append({"pointer": f"{base}/{i}/target", "message": message})
        if errors:
            raise Unprocessable("the alert is not valid", errors=errors)
        alert_id = await self.repo.create_alert(conn, consumer_id, data)
        alert = await self.repo.get_alert(conn, alert_id)
        if alert is None:
            raise NotFound("alert vanished")
        await self._evaluate(conn, alert)
        await self.audit_log.record(
            conn,
            principal,
            "alert.create",
            "alert",
            alert_id,
            None,
            {**msgspec.to_builtins(data), "consumer_id": consumer_id},
            consumer_id=consumer_id,
        )
        return alert

    async def _evaluate(self, conn: AsyncConnection[Any], alert: Alert) -> None:
        try:
            cond = msgspec.convert(alert.condition, AlertCondition)
        except msgspec.ValidationError:
            return  # written by hand with another shape: shown as is, not evaluated
        alert.current_value = await self.repo.metric_value(conn, alert.consumer_id, cond)
        alert.breaching = breaches(alert.current_value, cond.operator, cond.threshold)


def ssrf_disagreement(live: list[DispatcherInfo], settings: Settings) -> list[str]:
    """Flag live dispatchers whose SSRF policy differs from most others' (ties: from this API's own);
    the problem line names every policy and its dispatchers. Rows without a policy (older code) are
    left out."""
    by_policy: dict[str, list[DispatcherInfo]] = {}
    for d in live:
        if d.ssrf_policy is not None:
            by_policy.setdefault(d.ssrf_policy, []).append(d)
    if len(by_policy) < 2:
        return []
    own = policy_fingerprint(settings.core.allow_private_cidrs)
    usual = max(by_policy, key=lambda p: (len(by_policy[p]), p == own, p))
    parts = []
    for policy, group in sorted(by_policy.items()):
        for d in group:
            d.ssrf_policy_differs = policy != usual
        exempt = ",".join(group[0].ssrf_exempt or []) or "nothing"
        parts.append(f"{', '.join(d.id for d in group)} exempt {exempt} ({policy})")
    return ["dispatchers disagree on the SSRF policy (WHK_ALLOW_PRIVATE_CIDRS): " + "; ".join(parts)]


def _prometheus(data: dict[str, Any]) -> bytes:
    """Render ``data`` with prometheus-client into the text exposition format (one registry per call)."""
    reg = CollectorRegistry(auto_describe=False)
    g = Gauge("whk_deliveries", "Deliveries by status.", ["status"], registry=reg)
    for status, n in data["deliveries"].items():
        g.labels(status=status).set(n)
    g = Gauge("whk_webhooks", "Webhooks (not deleted) by status.", ["status"], registry=reg)
    for status, n in data["webhooks"].items():
        g.labels(status=status).set(n)
    g = Gauge("whk_breakers", "Webhook circuit breakers by state.", ["state"], registry=reg)
    for state, n in data["breakers"].items():
        g.labels(state=state).set(n)
    count = Gauge(
        "whk_attempts_5m", "Delivery attempts in the last 5 minutes by outcome.", ["outcome"], registry=reg
    )
    lat = Gauge(
        "whk_attempt_latency_5m_ms",
        "Attempt latency percentiles, last 5 minutes.",
        ["outcome", "quantile"],
        registry=reg,
    )
    for a in data["attempts_5m"]:
        count.labels(outcome=a["status"]).set(a["n"])
        for q in ("p50", "p95", "p99"):
            if a[q] is not None:
                lat.labels(outcome=a["status"], quantile=q[1:]).set(a[q])
    for key, doc in (
        ("outbox_pending", "Outbox events not routed yet."),
        ("oldest_unrouted_age_s", "Age of the oldest unrouted outbox event, seconds."),
        ("oldest_due_delivery_age_s", "How long the oldest due delivery has waited, seconds."),
        ("dispatchers_alive", "Dispatchers with a heartbeat within the lease."),
        ("schema_version", "Applied database schema version."),
    ):
        if key in data:
            gauge = Gauge(f"whk_{key}", doc, registry=reg)
            gauge.set(data[key] if data[key] is not None else 0)
    return generate_latest(reg)
