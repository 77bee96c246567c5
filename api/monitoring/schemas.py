"""Wire shapes of health, dashboard, metrics (JSON form) and alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from api.shapes import Email

# Every metric an alert can watch, and the KPI view it reads (docs/operations.md).
Metric = Literal[
    "failure_rate",
    "dead_letters",
    "retry_rate",
    "latency_p95_ms",
    "pending_age_s",
    "consecutive_failures",
    "breaker_open_s",
    "webhooks_disabled",
    "webhooks_needs_secret",
    "live_dispatchers",
    "unrouted_age_s",
    "slo_burn_rate",
]
AlertState = Literal["ok", "pending", "firing", "resolved"]
Int64 = Annotated[int, Meta(ge=1, le=9223372036854775807)]


class DispatcherInfo(msgspec.Struct, kw_only=True):
    """A dispatcher's heartbeat row. ``ssrf_policy`` names the SSRF exemptions it enforces
    (``ssrf_exempt``, from WHK_ALLOW_PRIVATE_CIDRS); ``ssrf_policy_differs``: another policy than most
    live dispatchers (then which process claims a delivery decides whether it may be sent).
    ``last_error``: why its rounds fail right now when no single webhook is to blame (since
    ``last_error_at``)."""

    id: str
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age_s: float
    idle: bool
    stopping: bool
    alive: bool = True
    ssrf_policy: str | None = None
    ssrf_exempt: list[str] | None = None
    ssrf_policy_differs: bool = False
    last_error: str | None = None
    last_error_at: datetime | None = None


class SupervisedProcess(msgspec.Struct, kw_only=True):
    """A child of a running `whk up` (whk.supervised_processes): ``failing`` = it crashed too often
    within the supervisor's window and is only retried slowly."""

    supervisor: str
    name: str
    pid: int | None
    state: Literal["running", "restarting", "failing"]
    restarts: int
    crashes_in_window: int
    last_exit: str | None
    last_exit_at: datetime | None
    updated_at: datetime


class SchedulerInfo(msgspec.Struct, kw_only=True):
    """The newest run of one scheduled operations job."""

    job: str
    period_s: int
    last_started_at: datetime
    age_s: float
    ok: bool | None
    stale: bool = False


class Health(msgspec.Struct, kw_only=True):
    """``ok``: everything fine; ``degraded``: serving but work is waiting too long, no dispatcher is
    alive, webhooks are quarantined (``quarantined_webhooks``: their ids, the first 100) or wait for a
    signing secret (``needs_secret_webhooks``: nothing is sent unsigned; the job worker provisions one), live
    dispatchers disagree on the SSRF policy, or a dispatcher's rounds are failing; ``down``: the database
    is unreachable or at another schema version (HTTP 503)."""

    status: Literal["ok", "degraded", "down"]
    database: Literal["ok", "unavailable"]
    database_latency_ms: float | None
    schema_version: int | None
    expected_schema_version: int
    dispatchers_alive: int
    dispatchers: list[DispatcherInfo]
    oldest_unrouted_age_s: float | None
    oldest_due_delivery_age_s: float | None
    oldest_pending_warn_s: float
    problems: list[str]
    quarantined_webhooks: list[int] = msgspec.field(default_factory=list)
    needs_secret_webhooks: list[int] = msgspec.field(default_factory=list)
    supervised: list[SupervisedProcess] = msgspec.field(default_factory=list)
    schedulers: list[SchedulerInfo] = msgspec.field(default_factory=list)


class StatusCount(msgspec.Struct, kw_only=True):
    status: str
    n: int


class AttemptWindow(msgspec.Struct, kw_only=True):
    status: str
    n: int
    p50: float | None
    p95: float | None
    p99: float | None
    total_ms: float


class FailingWebhook(msgspec.Struct, kw_only=True):
    webhook_id: int
    name: str
    url: str
    status: str
    breaker_state: str
    dead_24h: int
    failed_attempts_24h: int


class DeadLetter(msgspec.Struct, kw_only=True):
    id: int
    webhook_id: int
    event_type: str
    dead_at: datetime | None
    dead_reason: str | None
    last_status_code: int | None
    last_error: str | None


class Dashboard(msgspec.Struct, kw_only=True):
    generated_at: datetime
    deliveries_by_status: dict[str, int]
    webhooks_by_status: dict[str, int]
    breakers: dict[str, int]
    attempts_last_hour: list[AttemptWindow]
    success_rate_last_hour: float | None
    top_failing_webhooks: list[FailingWebhook]
    recent_dead_letters: list[DeadLetter]
    firing_alerts: int
    dispatchers_alive: int | None
    outbox_pending: int | None


class AlertCondition(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``metric operator threshold`` over the last ``window_s`` seconds (scope: webhook_id, else the
    alert's consumer, else everything)."""

    metric: Metric
    operator: Literal[">", ">=", "<", "<="]
    threshold: Annotated[float, Meta(ge=0, le=1e12)]
    window_s: Annotated[int, Meta(ge=60, le=604800)] = 300
    webhook_id: Int64 | None = None
    # slo_burn_rate: the SLO, and the two windows whose burn rates must both reach the threshold.
    slo_id: Int64 | None = None
    long_window_s: Annotated[int, Meta(ge=300, le=2592000)] | None = None
    short_window_s: Annotated[int, Meta(ge=60, le=2592000)] | None = None


# Where an alert notifies, one shape per ``type`` (``{"type": "email", "target": "ops@example.com"}``), so
# the document says what each target must look like. URL targets also pass the SSRF policy (else 422).
HttpUrl = Annotated[
    str,
    Meta(
        min_length=8,
        max_length=2048,
        pattern=r"^https?://[^\x00-\x20\x7f]+$",
        examples=["https://ops.example.com/hook"],
    ),
]


class _Channel(msgspec.Struct, tag_field="type", kw_only=True, forbid_unknown_fields=True):
    """Where an alert notifies; ``type`` says which kind (the tag)."""


WhSecret = Annotated[
    str, Meta(pattern=r"^whsec_[A-Za-z0-9+/]{32,88}={0,2}$", description="Standard Webhooks secret")
]


class WebhookChannel(_Channel, tag="webhook"):
    """A POST signed with Standard Webhooks; without ``secret`` one is generated (shown once, on create)."""

    target: HttpUrl
    secret: WhSecret | None = None


class SlackChannel(_Channel, tag="slack"):
    """A Slack incoming-webhook URL (stored encrypted: the URL is the credential)."""

    target: HttpUrl


class EmailChannel(_Channel, tag="email"):
    """Plain-text mail through an SMTP server; the password is stored encrypted."""

    target: Email
    smtp_host: Annotated[str, Meta(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:\[\]-]+$")] = (
        "localhost"
    )
    smtp_port: Annotated[int, Meta(ge=1, le=65535)] = 25
    smtp_username: Annotated[str, Meta(max_length=200)] | None = None
    smtp_password: Annotated[str, Meta(max_length=500)] | None = None
    smtp_from: Email = "whk@localhost.localdomain"
    starttls: bool = False


class PagerDutyChannel(_Channel, tag="pagerduty"):
    target: Annotated[str, Meta(pattern=r"^[A-Za-z0-9]{20,64}$", description="PagerDuty routing key")]


AlertChannel = WebhookChannel | SlackChannel | EmailChannel | PagerDutyChannel


class EscalationStep(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Notify ``channels`` once the alert has fired for ``after_s`` seconds without an acknowledgement."""

    after_s: Annotated[int, Meta(ge=60, le=604800)]
    channels: Annotated[list[AlertChannel], Meta(min_length=1, max_length=10)]


class AlertCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=200, examples=["orders failing"])]
    condition: AlertCondition
    description: Annotated[str, Meta(max_length=2000)] | None = None
    severity: Literal["info", "warning", "critical"] = "warning"
    channels: Annotated[list[AlertChannel], Meta(max_length=10)] = msgspec.field(default_factory=list)
    escalation: Annotated[list[EscalationStep], Meta(max_length=10)] = msgspec.field(default_factory=list)
    throttle_seconds: Annotated[int, Meta(ge=0, le=86400)] = 300
    for_s: Annotated[int, Meta(ge=0, le=86400, description="seconds the condition must hold first")] = 60
    enabled: bool = True
    consumer_id: Annotated[int, Meta(ge=1, le=9223372036854775807)] | None = None


class ChannelInfo(msgspec.Struct, kw_only=True):
    """A stored channel: its target masked (the secret parts are encrypted at rest)."""

    id: int
    type: str
    display: str
    # Only in the answer that created a webhook channel without a secret: the generated one.
    secret: str | None = None


class EscalationInfo(msgspec.Struct, kw_only=True):
    after_s: int
    channels: list[ChannelInfo]


class Alert(msgspec.Struct, kw_only=True):
    """An alert rule with its evaluation state (written by the operations worker every period)."""

    id: int
    consumer_id: int | None
    name: str
    description: str | None
    severity: str
    condition: dict[str, Any]
    channels: list[ChannelInfo]
    escalation: list[EscalationInfo]
    throttle_seconds: int
    for_s: int
    enabled: bool
    state: AlertState
    builtin: str | None
    pending_since: datetime | None
    firing_since: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    silenced_until: datetime | None
    escalation_step: int
    last_evaluated_at: datetime | None
    last_triggered_at: datetime | None
    trigger_count: int
    created_at: datetime
    updated_at: datetime
    current_value: float | None = None
    breaching: bool | None = None


class AlertRow(msgspec.Struct, kw_only=True):
    """whk.whk_06_alertas as read (channels as stored: [{"channel_id": n}])."""

    id: int
    consumer_id: int | None
    name: str
    description: str | None
    severity: str
    condition: dict[str, Any]
    channels: list[Any]
    escalation: list[Any]
    throttle_seconds: int
    for_s: int
    enabled: bool
    state: AlertState
    builtin: str | None
    pending_since: datetime | None
    firing_since: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    silenced_until: datetime | None
    escalation_step: int
    last_value: float | None
    last_evaluated_at: datetime | None
    last_triggered_at: datetime | None
    trigger_count: int
    created_at: datetime
    updated_at: datetime


class AlertActivation(msgspec.Struct, kw_only=True):
    """One activation (whk_06_alertas_historico): when it fired and cleared, its value, what was sent."""

    id: int
    alert_id: int
    triggered_at: datetime
    resolved_at: datetime | None
    value: float | None
    severity: str | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    details: dict[str, Any]
    notified: list[Any]


class ActivationPage(msgspec.Struct, kw_only=True):
    items: list[AlertActivation]
    next_after_id: int | None


class Silence(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Silence notifications for ``duration_s`` seconds from now (0 lifts the silence)."""

    duration_s: Annotated[int, Meta(ge=0, le=2592000)]


class TestSent(msgspec.Struct, kw_only=True):
    """The test notifications queued (one job per channel), recorded under ``history_id``."""

    history_id: int
    queued: int


class SloCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A success-ratio objective over delivery attempts of one webhook, one consumer or everything, with
    the SRE workbook's burn-rate alerts on ``channels``: page at 14.4x over 1 h and 5 min, ticket at 6x
    over 6 h and 30 min."""

    name: Annotated[str, Meta(min_length=1, max_length=200)]
    objective: Annotated[float, Meta(ge=0.5, le=0.9999, examples=[0.995])]
    window_days: Annotated[int, Meta(ge=1, le=30)] = 30
    webhook_id: Int64 | None = None
    consumer_id: Int64 | None = None
    channels: Annotated[list[AlertChannel], Meta(max_length=10)] = msgspec.field(default_factory=list)


class SloPoint(msgspec.Struct, kw_only=True):
    day: datetime
    attempts: int
    failures: int
    compliance: float | None


class Slo(msgspec.Struct, kw_only=True):
    """An SLO with its figures now (whk.kpi_slo) and, on the single read, compliance per day."""

    slo_id: int
    consumer_id: int | None
    webhook_id: int | None
    name: str
    objective: float
    window_days: int
    attempts: int
    failures: int
    compliance: float | None
    error_budget: float | None
    budget_remaining: float | None
    burn_rate_5m: float | None
    burn_rate_30m: float | None
    burn_rate_1h: float | None
    burn_rate_2h: float | None
    burn_rate_6h: float | None
    burn_rate_1d: float | None
    burn_rate_3d: float | None
    alert_ids: list[int] = msgspec.field(default_factory=list)
    history: list[SloPoint] = msgspec.field(default_factory=list)


class SloPage(msgspec.Struct, kw_only=True):
    items: list[Slo]


class AlertPage(msgspec.Struct, kw_only=True):
    items: list[Alert]
    next_after_id: int | None
