"""Row and wire shapes of the dispatcher (msgspec Structs, decoded straight from query rows)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec


class ClaimedDelivery(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One row returned by ``whk.claim_deliveries``."""

    delivery_id: int
    webhook_id: int
    event_id: uuid.UUID
    event_type: str
    attempts: int
    schedule_offset: int
    batch_id: uuid.UUID | None
    commit_seq: int | None
    ordering_key: str | None
    payload: str


class WebhookRow(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The delivery settings of one webhook (query ``webhooks``)."""

    id: int
    consumer_id: int
    url: str
    http_method: str
    headers: dict[str, Any]
    auth_type: str
    auth_header_name: str | None
    auth_credential_enc: bytes | None
    require_ack: bool
    ack_timeout_seconds: int
    retry_policy: dict[str, Any] | None
    timeout_ms: int
    delivery_mode: str
    status: str
    secret_ids: list[int]
    secrets_enc: list[bytes]
    # Until when this webhook's deliveries are logged in detail (webhook_runtime.trace_until; POST
    # /api/whk/webhooks/{id}/trace): read with the row, so tracing costs no query per event.
    trace_until: datetime | None = None


class AttemptLog(msgspec.Struct, frozen=True):
    """One HTTP request's attempt record, as ``whk.record_outcomes`` reads it (see its SQL comment).

    A batch request is one attempt however many deliveries it carried; ``ix`` is its position in the group
    sent to the database (the deliveries point at it)."""

    webhook_id: int
    success: bool
    failure: bool
    gone: bool
    outcome: str
    request_method: str
    request_url: str
    started_at: datetime
    ix: int = 0
    request_headers: dict[str, str] = msgspec.field(default_factory=dict)
    batch_id: uuid.UUID | None = None
    duration_ms: float | None = None
    request_body_sha256: str | None = None
    request_body_size: int | None = None
    response_status: int | None = None
    response_headers: dict[str, str] | None = None
    response_body: str | None = None
    response_truncated: bool = False
    error_class: str | None = None
    error_detail: str | None = None


class DeliveryOutcome(msgspec.Struct, frozen=True):
    """What one delivery becomes after a request: its new state and, for a retry, when."""

    id: int
    attempt_no: int
    state: str
    next_attempt_at: datetime | None = None
    ack_deadline: datetime | None = None
    dead_reason: str | None = None


class RequestOutcome(msgspec.Struct, frozen=True):
    """A finished request: its attempt record and the outcome of every delivery it carried."""

    attempt: AttemptLog
    deliveries: tuple[DeliveryOutcome, ...]


class RoundFault(msgspec.Struct, frozen=True):
    """One row of ``whk.isolate_round_faults``: a quarantined culprit, or (webhook_id None) a stage that
    fails without one."""

    webhook_id: int | None
    stage: str
    sqlstate: str | None
    message: str | None


class BreakerTransition(msgspec.Struct, frozen=True):
    """A breaker moved by one outcome write (``whk.record_outcomes``' ``breaker_transitions``)."""

    webhook_id: int
    from_state: str
    to_state: str


class Recorded(msgspec.Struct, frozen=True):
    """What one outcome write did: deliveries written, breakers moved."""

    applied: int
    transitions: list[BreakerTransition]
