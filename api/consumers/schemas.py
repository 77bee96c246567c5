"""Wire shapes of the consumer (tenant) resource."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from api.shapes import Burst, Email, RatePerSecond

Name = Annotated[str, Meta(min_length=1, max_length=200, examples=["acme-billing"])]
Text = Annotated[str, Meta(max_length=2000)]
Cidr = Annotated[str, Meta(max_length=64, examples=["203.0.113.0/24", "2001:db8::/32"])]
Status = Annotated[
    Literal["active", "suspended", "disabled"],
    Meta(
        description="gates API access and delivery: suspended holds deliveries pending (still routed), "
        "disabled parks them (no longer routed); back to active releases them"
    ),
]
PerMinute = Annotated[int, Meta(ge=1, le=1_000_000_000, description="API requests per minute")]
PerDay = Annotated[int, Meta(ge=1, le=1_000_000_000, description="deliveries per day")]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ClockTime = Annotated[
    str, Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="local time HH:MM", examples=["22:00"])
]


class QuietWindow(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A window starting on each listed day at ``start`` (local time) and ending at ``end`` the same day, or
    the next day when ``end`` is at or before ``start`` (weekdays 22:00-07:00 ends Saturday 07:00)."""

    days: Annotated[list[Day], Meta(min_length=1, max_length=7)]
    start: ClockTime
    end: ClockTime


class QuietHours(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Windows in which the consumer's deliveries wait, pending, unless their webhook is ``urgent``; they go
    out when the window ends (docs/delivery.md, "Quiet hours"). Checked by ``whk.quiet_hours_problem``."""

    time_zone: Annotated[
        str, Meta(min_length=1, max_length=64, description="IANA time zone name", examples=["Europe/Lisbon"])
    ]
    windows: Annotated[list[QuietWindow], Meta(min_length=1, max_length=14)]


class ConsumerCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A consumer (tenant): owner of webhooks, deliveries and API keys."""

    name: Name
    description: Text | None = None
    contact_name: Annotated[str, Meta(max_length=200)] | None = None
    contact_email: Email | None = None
    status: Status = "active"
    auth_settings: dict[str, Any] = msgspec.field(default_factory=dict)
    allowed_ips: Annotated[list[Cidr], Meta(max_length=100)] = msgspec.field(default_factory=list)
    rate_limit_per_second: RatePerSecond | None = None
    rate_limit_burst: Burst | None = None
    api_rate_limit_per_minute: PerMinute | None = None
    quota_deliveries_per_day: PerDay | None = None
    delivery_preferences: dict[str, Any] = msgspec.field(default_factory=dict)
    quiet_hours: QuietHours | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class ConsumerUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Fields present are changed. A consumer may change its own ``SELF_SERVICE`` fields only."""

    name: Name | UnsetType = UNSET
    description: Text | UnsetType | None = UNSET
    contact_name: Annotated[str, Meta(max_length=200)] | UnsetType | None = UNSET
    contact_email: Email | UnsetType | None = UNSET
    status: Status | UnsetType = UNSET
    auth_settings: dict[str, Any] | UnsetType = UNSET
    allowed_ips: Annotated[list[Cidr], Meta(max_length=100)] | UnsetType = UNSET
    rate_limit_per_second: RatePerSecond | UnsetType | None = UNSET
    rate_limit_burst: Burst | UnsetType | None = UNSET
    api_rate_limit_per_minute: PerMinute | UnsetType | None = UNSET
    quota_deliveries_per_day: PerDay | UnsetType | None = UNSET
    delivery_preferences: dict[str, Any] | UnsetType = UNSET
    quiet_hours: QuietHours | UnsetType | None = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET


SELF_SERVICE = frozenset(
    {"description", "contact_name", "contact_email", "delivery_preferences", "quiet_hours", "metadata"}
)


class Consumer(msgspec.Struct, kw_only=True):
    id: int
    name: str
    description: str | None
    contact_name: str | None
    contact_email: str | None
    status: str
    auth_settings: dict[str, Any]
    allowed_ips: list[str]
    rate_limit_per_second: float | None
    rate_limit_burst: int | None
    api_rate_limit_per_minute: int | None
    quota_deliveries_per_day: int | None
    delivery_preferences: dict[str, Any]
    quiet_hours: QuietHours | None
    metadata: dict[str, Any]
    last_activity_at: datetime | None
    usage_deliveries_total: int
    usage_deliveries_failed: int
    created_at: datetime
    updated_at: datetime


class ConsumerPage(msgspec.Struct, kw_only=True):
    items: list[Consumer]
    next_cursor: str | None
