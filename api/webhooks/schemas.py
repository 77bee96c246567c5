"""Wire shapes of the webhook resource (msgspec Structs with constraints; unknown fields refused)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import UNSET, Meta, UnsetType

from api.deliveries.schemas import DeliveryAttempt
from api.shapes import EVENT_PATTERN_RE, EVENT_TYPE_RE, Burst, RatePerSecond
from whk.breaker import BreakerConfig

Name = Annotated[str, Meta(min_length=1, max_length=200)]
Url = Annotated[str, Meta(min_length=8, max_length=2048, examples=["https://erp.example.com/hooks/whk"])]
EventPattern = Annotated[
    str, Meta(pattern=EVENT_PATTERN_RE, max_length=200, examples=["order.created", "order.*", "*"])
]
EventType = Annotated[str, Meta(pattern=EVENT_TYPE_RE, max_length=200, examples=["order.created"])]
HeaderName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")]
HeaderValue = Annotated[str, Meta(max_length=2000, pattern=r"^[^\r\n\x00]*$")]
JsonPath = Annotated[str, Meta(min_length=1, max_length=2000, examples=["$.data.new.total > 100"])]
Method = Literal["POST", "PUT", "PATCH"]
AuthType = Literal["none", "api_key", "bearer", "basic"]
Status = Literal["active", "paused", "disabled"]
Mode = Literal["immediate", "batch", "delayed", "ordered"]
_PINNED = (
    "Pin a schema major: every event of the subscribed types arrives rendered to it (registered SQL "
    "transforms) with a `version` member; null = each event as emitted"
)
PinnedMajor = Annotated[int, Meta(ge=1, le=1000, description=_PINNED)]
# A delay has a floor (0.001 s) like every float setting, so nothing underflows in arithmetic on it.
DelaySeconds = Annotated[float, Meta(ge=0.001, le=604800)]
SupersedeByKey = Annotated[
    bool,
    Meta(
        description="delayed mode only: a newer event of the same key (ordering_key_path, else the event "
        "key) replaces the older one not yet attempted, which is kept as status superseded"
    ),
]
Urgent = Annotated[bool, Meta(description="delivered during the consumer's quiet hours too")]


class RetryPolicy(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Per-webhook retry override (same shape as whk_05_configuracoes 'retry.policy')."""

    schedule_s: Annotated[list[DelaySeconds], Meta(min_length=0, max_length=30)]
    jitter: Annotated[float, Meta(ge=0, le=0.99)] = 0.2
    throttle_floor_s: Annotated[float, Meta(ge=0, le=86400)] = 60
    retry_after_cap_factor: Annotated[float, Meta(ge=1, le=100)] = 2.0


class WebhookCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Register a webhook. ``consumer_id`` is required for admins and must be omitted (or be your own)
    for consumer credentials. ``auth_credential`` is write-only and stored encrypted."""

    name: Name
    url: Url
    event_types: Annotated[list[EventPattern], Meta(min_length=1, max_length=100)]
    consumer_id: Annotated[int, Meta(ge=1, le=9223372036854775807)] | None = None
    description: Annotated[str, Meta(max_length=2000)] | None = None
    http_method: Method = "POST"
    filter: JsonPath | None = None
    payload_version: PinnedMajor | None = None
    headers: Annotated[dict[HeaderName, HeaderValue], Meta(max_length=50)] = msgspec.field(
        default_factory=dict
    )
    auth_type: AuthType = "none"
    auth_header_name: HeaderName | None = None
    auth_credential: Annotated[str, Meta(min_length=1, max_length=4096)] | None = None
    status: Literal["active", "paused"] = "active"
    delivery_mode: Mode = "immediate"
    batch_size: Annotated[int, Meta(ge=1, le=1000)] = 100
    batch_window_ms: Annotated[int, Meta(ge=0, le=3600000)] = 1000
    delay_seconds: Annotated[int, Meta(ge=0, le=2592000)] = 0
    ordering_key_path: JsonPath | None = None
    supersede_by_key: SupersedeByKey = False
    urgent: Urgent = False
    retry_policy: RetryPolicy | None = None
    timeout_ms: Annotated[int, Meta(ge=100, le=120000)] = 15000
    rate_limit_per_second: RatePerSecond | None = None
    rate_limit_burst: Burst | None = None
    max_in_flight: Annotated[int, Meta(ge=1, le=1000)] = 10
    require_ack: bool = False
    ack_timeout_seconds: Annotated[int, Meta(ge=1, le=2592000)] = 3600
    breaker_config: BreakerConfig | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class WebhookUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Change a webhook: only the fields present are changed (``null`` clears an optional one).

    ``status``: ``active`` resumes (parked deliveries are released), ``paused`` stops claiming,
    ``disabled`` parks pending deliveries. ``auth_credential`` is write-only.
    """

    name: Name | UnsetType = UNSET
    url: Url | UnsetType = UNSET
    event_types: Annotated[list[EventPattern], Meta(min_length=1, max_length=100)] | UnsetType = UNSET
    description: Annotated[str, Meta(max_length=2000)] | UnsetType | None = UNSET
    http_method: Method | UnsetType = UNSET
    filter: JsonPath | UnsetType | None = UNSET
    payload_version: PinnedMajor | UnsetType | None = UNSET
    headers: Annotated[dict[HeaderName, HeaderValue], Meta(max_length=50)] | UnsetType = UNSET
    auth_type: AuthType | UnsetType = UNSET
    auth_header_name: HeaderName | UnsetType | None = UNSET
    auth_credential: Annotated[str, Meta(min_length=1, max_length=4096)] | UnsetType | None = UNSET
    status: Status | UnsetType = UNSET
    delivery_mode: Mode | UnsetType = UNSET
    batch_size: Annotated[int, Meta(ge=1, le=1000)] | UnsetType = UNSET
    batch_window_ms: Annotated[int, Meta(ge=0, le=3600000)] | UnsetType = UNSET
    delay_seconds: Annotated[int, Meta(ge=0, le=2592000)] | UnsetType = UNSET
    ordering_key_path: JsonPath | UnsetType | None = UNSET
    supersede_by_key: SupersedeByKey | UnsetType = UNSET
    urgent: Urgent | UnsetType = UNSET
    retry_policy: RetryPolicy | UnsetType | None = UNSET
    timeout_ms: Annotated[int, Meta(ge=100, le=120000)] | UnsetType = UNSET
    rate_limit_per_second: RatePerSecond | UnsetType | None = UNSET
    rate_limit_burst: Burst | UnsetType | None = UNSET
    max_in_flight: Annotated[int, Meta(ge=1, le=1000)] | UnsetType = UNSET
    require_ack: bool | UnsetType = UNSET
    ack_timeout_seconds: Annotated[int, Meta(ge=1, le=2592000)] | UnsetType = UNSET
    breaker_config: BreakerConfig | UnsetType | None = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET


class Webhook(msgspec.Struct, kw_only=True):
    """A webhook as the API shows it (the outbound credential never, only whether one is set)."""

    id: int
    consumer_id: int
    name: str
    description: str | None
    url: str
    http_method: str
    event_types: list[str]
    filter: str | None
    payload_version: int | None
    headers: dict[str, str]
    auth_type: str
    auth_header_name: str | None
    has_credential: bool
    status: str
    disabled_reason: str | None
    disabled_at: datetime | None
    delivery_mode: str
    batch_size: int
    batch_window_ms: int
    delay_seconds: int
    ordering_key_path: str | None
    supersede_by_key: bool
    urgent: bool
    retry_policy: dict[str, Any] | None
    timeout_ms: int
    rate_limit_per_second: float | None
    rate_limit_burst: int | None
    max_in_flight: int
    require_ack: bool
    ack_timeout_seconds: int
    breaker_config: dict[str, Any] | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    # Quarantine (docs/delivery.md): set when the webhook's data broke a delivery statement (stage route,
    # claim or record, with the database error) or the SSRF guard refused its endpoint (stage ssrf). The
    # dispatcher skips it until an admin clears it (POST .../clear-quarantine) or resumes it.
    quarantined_at: datetime | None = None
    quarantine_stage: Literal["route", "claim", "record", "ssrf"] | None = None
    quarantine_sqlstate: str | None = None
    quarantine_reason: str | None = None


class WebhookCreated(msgspec.Struct, kw_only=True):
    """The new webhook and its signing secret, shown this once (store it: it cannot be read again)."""

    webhook: Webhook
    signing_secret: str
    key_id: str


class WebhookPage(msgspec.Struct, kw_only=True):
    items: list[Webhook]
    next_cursor: str | None


# A trace is at most a day long (the CHECK webhook_runtime_trace_bounds says the same in SQL).
TRACE_MAX_SECONDS = 86_400


class TraceRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Log this webhook's deliveries in detail (request, response, classifier decision) for ``seconds``;
    0 stops a running trace."""

    seconds: Annotated[int, Meta(ge=0, le=TRACE_MAX_SECONDS, description="trace duration; 0 stops")] = 900


class TraceState(msgspec.Struct, kw_only=True):
    """The webhook's trace flag: detailed delivery logs until ``trace_until`` (null: not tracing)."""

    webhook_id: int
    trace_until: datetime | None


class TestRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Send one signed synthetic event to the webhook's URL (nothing is written to the outbox)."""

    event_type: EventType = "system.health_check"
    data: dict[str, Any] | None = None


class TestResult(msgspec.Struct, kw_only=True):
    """What the endpoint answered to the synthetic event."""

    event_type: str
    webhook_id_header: str
    url: str
    status: int | None
    ok: bool
    duration_ms: float
    response_headers: dict[str, str]
    response_excerpt: str
    response_truncated: bool
    error_class: str | None
    error_detail: str | None
    signed_with: list[str]


class Attempt(DeliveryAttempt, kw_only=True):
    """One attempt of one of the webhook's deliveries (the attempt log row plus what it delivered)."""

    delivery_id: int
    webhook_id: int
    event_id: UUID
    event_type: str


class AttemptPage(msgspec.Struct, kw_only=True):
    items: list[Attempt]
    next_cursor: str | None
