"""Wire shapes of health, dashboard, metrics (JSON form) and alerts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from api.shapes import Email

Metric = Literal[
    "failure_rate", "dead_letters", "retry_rate", "latency_p95_ms", "pending_age_s", "consecutive_failures"
]


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


class Health(msgspec.Struct, kw_only=True):
    """``ok``: everything fine; ``degraded``: serving but work is waiting too long, no dispatcher is
    alive, webhooks are quarantined (``quarantined_webhooks``: their ids, the first 100), live
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
    supervised: list[SupervisedProcess] = msgspec.field(default_factory=list)


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
    webhook_id: Annotated[int, Meta(ge=1, le=9223372036854775807)] | None = None


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


class WebhookChannel(_Channel, tag="webhook"):
    target: HttpUrl


class SlackChannel(_Channel, tag="slack"):
    target: HttpUrl


class EmailChannel(_Channel, tag="email"):
    target: Email


class PagerDutyChannel(_Channel, tag="pagerduty"):
    target: Annotated[str, Meta(pattern=r"^[A-Za-z0-9]{20,64}$", description="PagerDuty routing key")]


AlertChannel = WebhookChannel | SlackChannel | EmailChannel | PagerDutyChannel


class EscalationStep(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
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
    enabled: bool = True
    consumer_id: Annotated[int, Meta(ge=1, le=9223372036854775807)] | None = None


class Alert(msgspec.Struct, kw_only=True):
    """An alert definition with its metric's value right now and whether that breaches the threshold."""

    id: int
    consumer_id: int | None
    name: str
    description: str | None
    severity: str
    condition: dict[str, Any]
    channels: list[Any]
    escalation: list[Any]
    throttle_seconds: int
    enabled: bool
    state: str
    last_triggered_at: datetime | None
    trigger_count: int
    created_at: datetime
    updated_at: datetime
    current_value: float | None = None
    breaching: bool | None = None


class AlertPage(msgspec.Struct, kw_only=True):
    items: list[Alert]
    next_after_id: int | None
