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
from litestar import Controller, MediaType, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema
from litestar.params import JSONBody, QueryParameter, SkipValidation
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from psycopg import AsyncConnection
from psycopg_pool import PoolTimeout

from api.audit import AuditLog
from api.context import settings_dependency
from api.dashboard.data import DashboardData
from api.deps import Principal, require_own_consumer
from api.errors import NotFound, Unprocessable
from api.monitoring import actions
from api.monitoring.repository import MonitoringRepository
from api.monitoring.schemas import (
    ActivationPage,
    Alert,
    AlertChannel,
    AlertCondition,
    AlertCreate,
    AlertPage,
    AlertRow,
    AlertState,
    ChannelInfo,
    Dashboard,
    DispatcherInfo,
    EmailChannel,
    EscalationInfo,
    Health,
    Silence,
    SlackChannel,
    Slo,
    SloCreate,
    SloPage,
    TestSent,
    WebhookChannel,
)
from api.shapes import IdPath
from whk.migrate import code_version
from whk.notice import Kind, Notice
from whk.secretbox import SecretBox
from whk.settings import Settings
from whk.urlpolicy import check_url, policy_fingerprint

__all__ = ["MonitoringController", "ssrf_disagreement"]

Conn = NamedDependency[AsyncConnection[Any]]
# A `whk up` refreshes its children's rows every 5 s: older rows belong to a supervisor that is gone.
SUPERVISOR_FRESH_S = 30.0
Who = NamedDependency[Principal]


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
        self.open_work = DashboardData()
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
                schedulers = await self.repo.schedulers(conn)
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
        if row.needs_secret_count:
            ids = ", ".join(str(i) for i in row.needs_secret_webhooks)
            more = "" if row.needs_secret_count <= len(row.needs_secret_webhooks) else ", ..."
            waited = row.needs_secret_oldest_s or 0.0
            problems.append(
                f"{row.needs_secret_count} webhook(s) wait for a signing secret, nothing is sent until the "
                f"job worker (or `whk webhooks provision-secrets`) gives them one; the oldest has waited "
                f"{waited:.0f}s: {ids}{more}"
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
        # A scheduled job that ran before and has not started for 3 of its periods: its workers are gone
        # (or wedged), so alerts are not being evaluated.
        for job in schedulers:
            job.stale = job.age_s > 3 * job.period_s
            if job.stale:
                problems.append(
                    f"scheduler {job.job} has not run for {job.age_s:.0f}s (3 periods of {job.period_s}s)"
                )
        status: Literal["ok", "degraded", "down"] = "ok"
        if row.schema_version != expected:
            status = "down"
        elif problems:
            status = "degraded"
        body = Health(
            status=status,
            database="ok",
            database_latency_ms=round(latency, 3),
            quarantined_webhooks=row.quarantined_webhooks,
            needs_secret_webhooks=row.needs_secret_webhooks,
            supervised=supervised,
            schema_version=row.schema_version,
            expected_schema_version=expected,
            dispatchers_alive=alive,
            dispatchers=dispatchers,
            oldest_unrouted_age_s=row.oldest_unrouted_age_s,
            oldest_due_delivery_age_s=row.oldest_due_delivery_age_s,
            oldest_pending_warn_s=warn,
            problems=problems,
            schedulers=schedulers,
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
            conn, tenant=tenant, state="firing", enabled=True, after_id=None, limit=1000
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
        # Every gauge is index-driven (api/dashboard/queries.sql: open work from partial indexes, windows
        # on indexed timestamps): a scrape costs the same with 10 thousand or 100 million deliveries.
        backlog = await self.open_work.backlog(conn, tenant)
        firing = await self.open_work.firing_alerts(conn, tenant)
        data: dict[str, Any] = {
            "deliveries_open": {
                "pending": backlog.pending,
                "in_flight": backlog.in_flight,
                "awaiting_ack": backlog.awaiting_ack,
                "parked": backlog.parked,
            },
            "dead_letters_24h": backlog.dead_24h,
            "oldest_pending_age_s": backlog.oldest_pending_s,
            "alerts_firing": len(firing),
            "webhooks": await self.repo.counts(conn, "webhook_status_counts", tenant),
            "breakers": await self.repo.counts(conn, "breaker_counts", tenant),
            "attempts_5m": [msgspec.to_builtins(a) for a in await self.repo.attempts(conn, tenant, 300)],
        }
        if tenant is None:
            row = await self.repo.health(conn)
            dispatchers = await self.repo.dispatchers(conn)
            lease = float(settings.dispatcher.lease_seconds)
            data["outbox_pending"] = backlog.unrouted
            data["oldest_unrouted_age_s"] = row.oldest_unrouted_age_s
            data["oldest_due_delivery_age_s"] = row.oldest_due_delivery_age_s
            data["dispatchers_alive"] = sum(
                1 for d in dispatchers if d.heartbeat_age_s <= lease and not d.stopping
            )
            data["schema_version"] = row.schema_version
        if output == "json":
            return Response(data, media_type=MediaType.JSON)
        return Response(_prometheus(data), media_type=CONTENT_TYPE_LATEST)

    @get("/alerts", operation_id="listAlerts", summary="Alert rules with their evaluation state")
    async def list_alerts(
        self,
        conn: Conn,
        principal: Who,
        alert_state: Annotated[AlertState | None, QueryParameter(name="state")] = None,
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
            breaching_only=breaching_only,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        items = [await self._view(conn, r) for r in rows]
        return AlertPage(items=items, next_after_id=rows[-1].id if more and rows else None)

    @post("/alerts", operation_id="createAlert", summary="Create an alert", status_code=HTTP_201_CREATED)
    async def create_alert(
        self,
        conn: Conn,
        principal: Who,
        settings: NamedDependency[SkipValidation[Settings]],
        secretbox: NamedDependency[SkipValidation[SecretBox]],
        data: JSONBody[AlertCreate],
    ) -> Alert:
        tenant = principal.tenant_filter()
        consumer_id = data.consumer_id if tenant is None else tenant
        require_own_consumer(principal, data.consumer_id)
        await self._validate(conn, settings, tenant, consumer_id, data)
        async with conn.transaction():
            channels, steps = await self._channels(conn, secretbox, consumer_id, data)
            alert_id = await self.repo.save_alert(conn, consumer_id, data, channels, steps)
            await self.audit_log.record(
                conn,
                principal,
                "alert.create",
                "alert",
                alert_id,
                None,
                _audit_body(data, consumer_id),
                consumer_id=consumer_id,
            )
        return await self._one(conn, alert_id, tenant, created=channels + [c for st in steps for c in st])

    @get("/alerts/{alert_id:int}", operation_id="getAlert", summary="One alert rule with its state")
    async def get_alert(self, conn: Conn, principal: Who, alert_id: IdPath) -> Alert:
        return await self._one(conn, alert_id, principal.tenant_filter())

    @put("/alerts/{alert_id:int}", operation_id="replaceAlert", summary="Replace an alert rule")
    async def replace_alert(
        self,
        conn: Conn,
        principal: Who,
        settings: NamedDependency[SkipValidation[Settings]],
        secretbox: NamedDependency[SkipValidation[SecretBox]],
        alert_id: IdPath,
        data: JSONBody[AlertCreate],
    ) -> Alert:
        tenant = principal.tenant_filter()
        old = await self._row(conn, alert_id, tenant)
        if data.consumer_id not in (None, old.consumer_id):
            raise Unprocessable(
                "an alert's consumer cannot change",
                errors=[{"pointer": "/consumer_id", "message": "delete it and create it for the other one"}],
            )
        await self._validate(conn, settings, tenant, old.consumer_id, data)
        async with conn.transaction():
            channels, steps = await self._channels(conn, secretbox, old.consumer_id, data)
            await self.repo.save_alert(conn, old.consumer_id, data, channels, steps, alert_id=alert_id)
            paged = await self.repo.paged_channels(conn, alert_id)
            await self.repo.delete_channels(conn, _channel_ids(old), keep=paged)
            await self.audit_log.record(
                conn,
                principal,
                "alert.update",
                "alert",
                alert_id,
                None,
                _audit_body(data, old.consumer_id),
                consumer_id=old.consumer_id,
            )
        return await self._one(conn, alert_id, tenant, created=channels + [c for st in steps for c in st])

    @delete(
        "/alerts/{alert_id:int}", operation_id="deleteAlert", summary="Delete an alert rule", status_code=204
    )
    async def delete_alert(self, conn: Conn, principal: Who, alert_id: IdPath) -> None:
        old = await self._row(conn, alert_id, principal.tenant_filter())
        async with conn.transaction():
            # A firing rule resolves on its way out: the channels it paged (PagerDuty's incident) hear it.
            paged = await self.repo.paged_channels(conn, alert_id)
            for channel_id in paged:
                await self.repo.enqueue_notice(
                    conn, _notice(old, None, channel_id, "resolve", await self.repo.now(conn))
                )
            await self.repo.delete_alert(conn, alert_id)
            await self.repo.delete_channels(conn, _channel_ids(old), keep=paged)
            await self.audit_log.record(
                conn, principal, "alert.delete", "alert", alert_id, None, None, consumer_id=old.consumer_id
            )

    @get(
        "/alerts/{alert_id:int}/history",
        operation_id="alertHistory",
        summary="Activations of an alert, newest first, with what was notified",
    )
    async def alert_history(
        self,
        conn: Conn,
        principal: Who,
        alert_id: IdPath,
        after_id: Annotated[int | None, QueryParameter(ge=1, le=9223372036854775807)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    ) -> ActivationPage:
        await self._row(conn, alert_id, principal.tenant_filter())
        rows = await self.repo.history(conn, alert_id, after_id, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return ActivationPage(items=rows, next_after_id=rows[-1].id if more and rows else None)

    @post(
        "/alerts/{alert_id:int}/acknowledge",
        operation_id="acknowledgeAlert",
        summary="Acknowledge a firing alert: escalation and reminders stop; paged channels are told",
        status_code=HTTP_200_OK,
    )
    async def acknowledge_alert(self, conn: Conn, principal: Who, alert_id: IdPath) -> Alert:
        await actions.acknowledge_alert(conn, principal, self.repo, self.audit_log, alert_id)
        return await self._one(conn, alert_id, principal.tenant_filter())

    @post(
        "/alerts/{alert_id:int}/silence",
        operation_id="silenceAlert",
        summary="Silence an alert's notifications for a while (0 lifts it); it keeps being evaluated",
        status_code=HTTP_200_OK,
    )
    async def silence_alert(
        self, conn: Conn, principal: Who, alert_id: IdPath, data: JSONBody[Silence]
    ) -> Alert:
        await actions.silence_alert(conn, principal, self.repo, self.audit_log, alert_id, data.duration_s)
        return await self._one(conn, alert_id, principal.tenant_filter())

    @post(
        "/alerts/{alert_id:int}/test",
        operation_id="testAlert",
        summary="Send a test notification through every channel of the alert now (one job each)",
        status_code=HTTP_202_ACCEPTED,
    )
    async def test_alert(self, conn: Conn, principal: Who, alert_id: IdPath) -> TestSent:
        old = await self._row(conn, alert_id, principal.tenant_filter())
        ids = _channel_ids(old)
        if not ids:
            raise Unprocessable(
                "the alert has no channels",
                errors=[{"pointer": "/channels", "message": "add a channel first"}],
            )
        async with conn.transaction():
            history_id, at = await self.repo.open_test_activation(conn, alert_id)
            for channel_id in ids:
                await self.repo.enqueue_notice(conn, _notice(old, history_id, channel_id, "test", at))
            await self.audit_log.record(
                conn, principal, "alert.test", "alert", alert_id, None, None, consumer_id=old.consumer_id
            )
        return TestSent(history_id=history_id, queued=len(ids))

    # ------------------------------------------------------------------ SLOs
    @post(
        "/slos", operation_id="createSlo", summary="Create an SLO and its burn-rate alerts", status_code=201
    )
    async def create_slo(
        self,
        conn: Conn,
        principal: Who,
        settings: NamedDependency[SkipValidation[Settings]],
        secretbox: NamedDependency[SkipValidation[SecretBox]],
        data: JSONBody[SloCreate],
    ) -> Slo:
        tenant = principal.tenant_filter()
        consumer_id = data.consumer_id if tenant is None else tenant
        require_own_consumer(principal, data.consumer_id)
        if data.webhook_id is not None:
            owner = await self.repo.webhook_owner(conn, data.webhook_id)
            if owner is None or (tenant is not None and owner != tenant):
                raise NotFound(f"webhook {data.webhook_id} not found")
            consumer_id = owner if consumer_id is None else consumer_id
            if owner != consumer_id:
                raise Unprocessable(
                    "the webhook belongs to another consumer",
                    errors=[{"pointer": "/webhook_id", "message": "the webhook belongs to another consumer"}],
                )
        _check_channels(settings, [("/channels", data.channels)])
        async with conn.transaction():
            slo_id = await self.repo.create_slo(conn, consumer_id, data)
            for name, severity, burn, long_s, short_s, for_s in BURN_ALERTS:
                rule = AlertCreate(
                    name=f"{data.name}: {name}",
                    severity=severity,
                    condition=AlertCondition(
                        metric="slo_burn_rate",
                        operator=">=",
                        threshold=burn,
                        slo_id=slo_id,
                        long_window_s=long_s,
                        short_window_s=short_s,
                    ),
                    channels=data.channels,
                    for_s=for_s,
                    throttle_seconds=3600,
                )
                channels = await self.repo.create_channels(conn, secretbox, consumer_id, data.channels)
                await self.repo.save_alert(conn, consumer_id, rule, channels, [])
            await self.audit_log.record(
                conn,
                principal,
                "slo.create",
                "slo",
                slo_id,
                None,
                {**msgspec.to_builtins(data), "channels": len(data.channels), "consumer_id": consumer_id},
                consumer_id=consumer_id,
            )
        return await self._slo(conn, slo_id, tenant, with_history=False)

    @get("/slos", operation_id="listSlos", summary="SLOs with compliance, error budget left and burn rates")
    async def list_slos(self, conn: Conn, principal: Who) -> SloPage:
        return SloPage(items=await self.repo.slos(conn, principal.tenant_filter(), None))

    @get("/slos/{slo_id:int}", operation_id="getSlo", summary="One SLO with its compliance per day")
    async def get_slo(self, conn: Conn, principal: Who, slo_id: IdPath) -> Slo:
        return await self._slo(conn, slo_id, principal.tenant_filter(), with_history=True)

    async def _slo(
        self, conn: AsyncConnection[Any], slo_id: int, tenant: int | None, *, with_history: bool
    ) -> Slo:
        found = await self.repo.slos(conn, tenant, slo_id)
        if not found:
            raise NotFound(f"SLO {slo_id} not found")
        slo = found[0]
        if with_history:
            slo.history = await self.repo.slo_history(conn, slo_id)
        return slo

    # ------------------------------------------------------------------ helpers
    async def _validate(
        self,
        conn: AsyncConnection[Any],
        settings: Settings,
        tenant: int | None,
        consumer_id: int | None,
        data: AlertCreate,
    ) -> None:
        errors: list[dict[str, str]] = []
        if data.condition.webhook_id is not None:
            owner = await self.repo.webhook_owner(conn, data.condition.webhook_id)
            if owner is None or (tenant is not None and owner != tenant):
                raise NotFound(f"webhook {data.condition.webhook_id} not found")
            if consumer_id is not None and owner != consumer_id:
                errors.append(
                    {"pointer": "/condition/webhook_id", "message": "the webhook belongs to another consumer"}
                )
        if data.condition.metric == "slo_burn_rate":
            if data.condition.slo_id is None:
                errors.append({"pointer": "/condition/slo_id", "message": "slo_burn_rate needs slo_id"})
            elif not await self.repo.slos(conn, tenant, data.condition.slo_id):
                raise NotFound(f"SLO {data.condition.slo_id} not found")
        elif data.condition.slo_id is not None:
            errors.append({"pointer": "/condition/slo_id", "message": "only slo_burn_rate takes slo_id"})
        if data.condition.metric == "live_dispatchers" and tenant is not None:
            errors.append(
                {"pointer": "/condition/metric", "message": "platform-wide metrics are for admin alerts"}
            )
        steps = [("/channels", data.channels)] + [
            (f"/escalation/{i}/channels", s.channels) for i, s in enumerate(data.escalation)
        ]
        errors += _channel_errors(settings, steps)
        if errors:
            raise Unprocessable("the alert is not valid", errors=errors)

    async def _channels(
        self, conn: AsyncConnection[Any], box: SecretBox, consumer_id: int | None, data: AlertCreate
    ) -> tuple[list[ChannelInfo], list[list[ChannelInfo]]]:
        channels = await self.repo.create_channels(conn, box, consumer_id, data.channels)
        steps = [await self.repo.create_channels(conn, box, consumer_id, s.channels) for s in data.escalation]
        return channels, steps

    async def _row(self, conn: AsyncConnection[Any], alert_id: int, tenant: int | None) -> AlertRow:
        row = await self.repo.get_alert(conn, alert_id, tenant)
        if row is None:
            raise NotFound(f"alert {alert_id} not found")
        return row

    async def _one(
        self,
        conn: AsyncConnection[Any],
        alert_id: int,
        tenant: int | None,
        created: list[ChannelInfo] | None = None,
    ) -> Alert:
        alert = await self._view(conn, await self._row(conn, alert_id, tenant))
        secrets = {c.id: c.secret for c in created or [] if c.secret}
        for ch in alert.channels + [c for s in alert.escalation for c in s.channels]:
            ch.secret = secrets.get(ch.id)
        return alert

    async def _view(self, conn: AsyncConnection[Any], row: AlertRow) -> Alert:
        infos = await self.repo.channel_infos(conn, _channel_ids(row))

        def pick(entries: Any) -> list[ChannelInfo]:
            return [infos[i] for i in _ids(entries) if i in infos]

        fields = {
            f: getattr(row, f)
            for f in row.__struct_fields__
            if f not in ("channels", "escalation", "last_value")
        }
        return Alert(
            **fields,
            channels=pick(row.channels),
            escalation=[
                EscalationInfo(after_s=int(s.get("after_s", 0)), channels=pick(s.get("channels")))
                for s in row.escalation
                if isinstance(s, dict)
            ],
            current_value=row.last_value,
            breaching=None if row.last_evaluated_at is None else row.state in ("pending", "firing"),
        )


# The multi-window, multi-burn-rate alerts of a 30-day SLO (Google SRE workbook, ch. 5): name, severity,
# burn rate, long window, short window, for_s. Both windows must burn at the rate; the short one makes
# the alert clear soon after recovery.
BURN_ALERTS: tuple[tuple[str, Literal["critical", "warning"], float, int, int, int], ...] = (
    ("fast burn (page)", "critical", 14.4, 3600, 300, 0),
    ("slow burn (ticket)", "warning", 6.0, 21600, 1800, 0),
)


def _notice(row: AlertRow, history_id: int | None, channel_id: int, kind: Kind, at: datetime) -> Notice:
    return Notice(
        alert_id=row.id,
        history_id=history_id,
        channel_id=channel_id,
        kind=kind,
        name=row.name,
        description=row.description,
        severity=row.severity,
        metric=str(row.condition.get("metric")),
        operator=str(row.condition.get("operator")),
        threshold=float(row.condition.get("threshold", 0)),
        value=row.last_value,
        consumer_id=row.consumer_id,
        at=at,
    )


def _ids(entries: Any) -> list[int]:
    return [
        int(e["channel_id"])
        for e in entries or []
        if isinstance(e, dict) and isinstance(e.get("channel_id"), int)
    ]


def _channel_ids(row: AlertRow) -> list[int]:
    ids = _ids(row.channels)
    for step in row.escalation:
        if isinstance(step, dict):
            ids += _ids(step.get("channels"))
    return ids


def _channel_errors(settings: Settings, groups: list[tuple[str, list[AlertChannel]]]) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    for base, channels in groups:
        for i, ch in enumerate(channels):
            rule = None
            field = "target"
            if isinstance(ch, WebhookChannel | SlackChannel):
                rule = check_url(ch.target, settings.core.allow_private_cidrs)
            elif isinstance(ch, EmailChannel):
                # The SMTP host passes the same policy as a URL's host (literal addresses, metadata names).
                host = (
                    f"[{ch.smtp_host}]"
                    if ":" in ch.smtp_host and not ch.smtp_host.startswith("[")
                    else ch.smtp_host
                )
                rule = check_url(f"http://{host}/", settings.core.allow_private_cidrs)
                field = "smtp_host"
            if rule is not None:
                errors.append(
                    {"pointer": f"{base}/{i}/{field}", "message": f"refused by the SSRF policy: {rule}"}
                )
    return errors


def _check_channels(settings: Settings, groups: list[tuple[str, list[AlertChannel]]]) -> None:
    errors = _channel_errors(settings, groups)
    if errors:
        raise Unprocessable("a channel is not valid", errors=errors)


def _audit_body(data: AlertCreate, consumer_id: int | None) -> dict[str, Any]:
    """What the audit trail keeps of an alert: never channel targets or secrets (they are credentials)."""
    body = msgspec.to_builtins(data)
    body["channels"] = [c["type"] for c in body["channels"]]
    body["escalation"] = [
        {"after_s": s["after_s"], "channels": [c["type"] for c in s["channels"]]} for s in body["escalation"]
    ]
    return {**body, "consumer_id": consumer_id}


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
    g = Gauge("whk_deliveries_open", "Deliveries not finished yet, by status.", ["status"], registry=reg)
    for status, n in data["deliveries_open"].items():
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
        ("dead_letters_24h", "Deliveries dead-lettered in the last 24 hours."),
        ("oldest_pending_age_s", "How long the oldest due pending delivery has waited, seconds (0: none)."),
        ("alerts_firing", "Enabled alerts in state firing."),
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
