"""Wire shapes of the event catalog, custom triggers, history and statistics."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from msgspec import Meta

from api.shapes import EVENT_TYPE_RE, Timestamp

EventTypeName = Annotated[str, Meta(pattern=EVENT_TYPE_RE, max_length=200, examples=["invoice.paid"])]


class EventType(msgspec.Struct, kw_only=True):
    id: int
    name: str
    description: str
    category: str
    strict: bool
    current_major: int
    current_minor: int
    metadata: dict[str, Any]
    delivery_settings: dict[str, Any]
    fire_count: int
    last_fired_at: datetime | None
    created_at: datetime
    updated_at: datetime


class EventTypePage(msgspec.Struct, kw_only=True):
    items: list[EventType]
    next_cursor: str | None


class SchemaVersion(msgspec.Struct, kw_only=True):
    major: int
    minor: int
    schema: dict[str, Any]
    changelog: str | None
    created_at: datetime


class EventTransform(msgspec.Struct, kw_only=True):
    """A registered transform: webhooks pinned to ``to_major`` get events of ``from_major`` rendered by
    ``function`` (chains are followed). Registered in SQL with ``whk.register_event_transform``."""

    from_major: int
    to_major: int
    function: str
    created_at: datetime
    updated_at: datetime


class EventCounters(msgspec.Struct, kw_only=True):
    """Firing history: totals kept by the router, recent volume, deliveries by status (your tenant's)."""

    fire_count: int
    last_fired_at: datetime | None
    events_24h: int | None
    events_7d: int | None
    pending_routing: int | None
    invalid: int | None
    subscribed_webhooks: int
    deliveries: dict[str, int]


class EventTypeDetail(msgspec.Struct, kw_only=True):
    type: EventType
    version: str
    versions: list[SchemaVersion]
    transforms: list[EventTransform]
    counters: EventCounters


class EventTypeRegister(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Register a type or publish a new schema version (JSON Schema 2020-12 describing ``data``).

    An identical schema changes nothing, a backward compatible one bumps the minor version, a breaking
    one is refused unless ``new_major`` is true. A new major that would leave webhooks pinned to another
    major without a transform is refused, listing them, unless ``force`` is true (their deliveries are
    then parked until a transform is registered).
    """

    name: EventTypeName
    schema: dict[str, Any]
    description: Annotated[str, Meta(max_length=2000)] | None = None
    strict: bool | None = None
    category: Annotated[str, Meta(min_length=1, max_length=100, pattern=r"^[a-z][a-z0-9_]*$")] | None = None
    new_major: bool = False
    force: bool = False
    changelog: Annotated[str, Meta(max_length=2000)] | None = None


class EventTypeRegistered(msgspec.Struct, kw_only=True):
    name: str
    version: str
    created: bool


class TriggerRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Emit a custom event through ``whk.emit`` (same path as a captured change)."""

    type: EventTypeName
    data: dict[str, Any]
    key: Annotated[str, Meta(min_length=1, max_length=500)] | None = None
    deliver_at: Timestamp | None = None


class TriggerResult(msgspec.Struct, kw_only=True):
    event_id: str
    type: str
    version: str
    deliver_at: datetime | None


class HistoryEvent(msgspec.Struct, kw_only=True):
    id: int
    event_id: UUID
    event_type: str
    event_version: int
    event_key: str | None
    operation: str
    source_table: str | None
    status: str
    valid: bool | None
    validation_error: str | None
    deliver_at: datetime | None
    created_at: datetime
    routed_at: datetime | None
    payload: dict[str, Any]
    deliveries: int


class HistoryPage(msgspec.Struct, kw_only=True):
    items: list[HistoryEvent]
    next_cursor: str | None


class VolumeBucket(msgspec.Struct, kw_only=True):
    event_type: str
    bucket: datetime
    events: int


class EventStats(msgspec.Struct, kw_only=True):
    since: datetime
    until: datetime
    interval: str
    buckets: list[VolumeBucket]
    totals: dict[str, int]
