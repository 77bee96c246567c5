"""Wire shapes of the delivery resource."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import Meta

from api.bulkretries.schemas import BulkRetry
from api.shapes import EVENT_TYPE_RE, Timestamp

DeliveryStatus = Literal[
    "pending", "in_flight", "awaiting_ack", "delivered", "dead", "parked", "cancelled", "superseded"
]
RetryableStatus = Literal["pending", "awaiting_ack", "delivered", "dead", "parked", "cancelled"]


class Delivery(msgspec.Struct, kw_only=True):
    """One event for one webhook: its state and retry bookkeeping (webhook-id header = event_id)."""

    id: int
    event_id: UUID
    outbox_id: int
    event_created_at: datetime
    event_type: str
    webhook_id: int
    consumer_id: int
    status: str
    ordering_key: str | None
    commit_seq: int | None
    attempts: int
    next_attempt_at: datetime
    lease_until: datetime | None
    last_status_code: int | None
    last_error: str | None
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    ack_deadline: datetime | None
    acked_at: datetime | None
    dead_at: datetime | None
    dead_reason: str | None
    # Why a parked delivery has no body for its webhook's pinned major yet (a transform missing or failing);
    # registering the transform in SQL releases it (docs/capture.md, "Versions and transforms").
    render_problem: str | None = None
    created_at: datetime
    updated_at: datetime
    # status superseded: the delivery of the same (webhook, key) that replaced this one before it was sent
    superseded_by: int | None = None


class DeliveryAttempt(msgspec.Struct, kw_only=True):
    id: int
    attempt_no: int
    batch_id: UUID | None
    dispatcher_id: str | None
    started_at: datetime
    duration_ms: float | None
    request_method: str
    request_url: str
    request_headers: dict[str, Any]
    request_body_sha256: str | None
    request_body_size: int | None
    response_status: int | None
    response_headers: dict[str, Any] | None
    response_body: str | None
    response_truncated: bool
    error_class: str | None
    error_detail: str | None
    outcome: str


class DeliveryDetail(Delivery, kw_only=True):
    """A delivery with the event body it carries and every attempt made."""

    payload: dict[str, Any] | None
    attempt_log: list[DeliveryAttempt] = msgspec.field(default_factory=list)


class DeliveryPage(msgspec.Struct, kw_only=True):
    items: list[Delivery]
    next_cursor: str | None


class RetryResult(msgspec.Struct, kw_only=True):
    delivery: Delivery
    requeued: bool


class AckResult(msgspec.Struct, kw_only=True):
    delivery: Delivery
    acked: bool


class BulkRetryRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Re-queue every delivery matching the filters (tenant applied). ``dry_run`` only counts, now.

    Otherwise the retry runs as a background job (``bulk_retry``, in batches of 1,000 by delivery id): the
    answer (202) carries the ``bulk_retry`` to follow at ``GET /bulk-retries/{id}`` and cancel at
    ``POST /bulk-retries/{id}/cancel``. In-flight deliveries are never touched.
    """

    webhook_id: Annotated[int, Meta(ge=1, le=9223372036854775807)] | None = None
    event_type: Annotated[str, Meta(pattern=EVENT_TYPE_RE, max_length=200)] | None = None
    status: Annotated[list[RetryableStatus], Meta(min_length=1, max_length=6)] = msgspec.field(
        default_factory=lambda: ["dead"]
    )
    created_from: Timestamp | None = None
    created_to: Timestamp | None = None
    dry_run: bool = False

    def filters(self) -> dict[str, Any]:
        """The filters as the bulk-retry queries and ``whk.bulk_retry_start`` take them."""
        return {
            "webhook_id": self.webhook_id,
            "event_type": self.event_type,
            "status": list(self.status),
            "created_from": self.created_from,
            "created_to": self.created_to,
        }


class BulkRetryResult(msgspec.Struct, kw_only=True):
    """``matched`` counts what can be re-queued; ``skipped_deleted_webhook`` the matching deliveries of
    deleted webhooks, which are never re-queued (nothing more is sent to a deleted webhook);
    ``bulk_retry``: the job doing it, unless a dry run."""

    dry_run: bool
    matched: int
    skipped_deleted_webhook: int = 0
    bulk_retry: BulkRetry | None = None


class PurgeRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Delete the dead letters matching the filters (tenant applied) for good. ``dry_run`` only counts.

    The filters are bulk-retry's, without ``status``: only dead letters are ever purged. At most
    ``max_deliveries`` go per call; the answer says how many matched so a client can repeat.
    """

    webhook_id: Annotated[int, Meta(ge=1, le=9223372036854775807)] | None = None
    event_type: Annotated[str, Meta(pattern=EVENT_TYPE_RE, max_length=200)] | None = None
    created_from: Timestamp | None = None
    created_to: Timestamp | None = None
    dry_run: bool = False
    max_deliveries: Annotated[int, Meta(ge=1, le=100000)] = 10000


class PurgeResult(msgspec.Struct, kw_only=True):
    dry_run: bool
    matched: int
    purged: int


class Percentiles(msgspec.Struct, kw_only=True):
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None


class DeliveryStatsRow(msgspec.Struct, kw_only=True):
    key: int | None = None
    total: int
    delivered: int
    dead: int
    in_progress: int
    success_rate: float | None
    retry_rate: float | None
    attempt_count: int
    attempt_latency_ms: Percentiles
    end_to_end_ms: Percentiles


class DeliveryStats(msgspec.Struct, kw_only=True):
    since: datetime
    until: datetime
    overall: DeliveryStatsRow
    per_webhook: list[DeliveryStatsRow]
    per_consumer: list[DeliveryStatsRow]
