"""Wire shape of a bulk retry."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

BulkRetryState = Literal["queued", "running", "done", "cancelled", "failed"]


class BulkRetry(msgspec.Struct, kw_only=True):
    """A bulk retry and its progress: ``done`` of ``total`` matching deliveries handled, of which
    ``requeued`` were put back in the queue and ``skipped`` could not be (their event left the outbox, their
    webhook was deleted or their status changed meanwhile). ``consumer_id`` is null for an admin's retry
    across every consumer."""

    id: int
    consumer_id: int | None
    webhook_id: int | None
    event_type: str | None
    status: list[str]
    created_from: datetime | None
    created_to: datetime | None
    total: int
    done: int
    requeued: int
    skipped: int
    state: BulkRetryState
    error: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
