"""Wire shapes of replays."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from api.shapes import EVENT_PATTERN_RE, Timestamp

ReplayState = Literal["queued", "running", "done", "cancelled", "failed"]
# A type name or a pattern (order.*, *), as in a webhook's event_types.
TypePattern = Annotated[str, Meta(pattern=EVENT_PATTERN_RE, max_length=200)]


class ReplayRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Send the webhook the past events of ``[since, until)`` it subscribes to, narrowed by
    ``event_types`` (names or patterns) and ``where`` (an SQL/JSON path predicate on the delivered body,
    like a webhook's ``filter``). ``since`` must be inside the outbox retention. ``dry_run`` only counts.

    Each event keeps one delivery per webhook forever: one the webhook already had is re-queued with the
    same ``webhook-id``, never duplicated.
    """

    since: Timestamp
    until: Timestamp | None = None
    event_types: Annotated[list[TypePattern], Meta(max_length=50)] = msgspec.field(default_factory=list)
    where: Annotated[str, Meta(min_length=1, max_length=2000)] | None = None
    dry_run: bool = False


class Replay(msgspec.Struct, kw_only=True):
    """A replay and its progress: ``done`` of ``total`` events handled (``created`` new deliveries,
    ``requeued`` existing ones)."""

    id: int
    webhook_id: int
    consumer_id: int
    since: datetime
    until: datetime
    event_types: list[str]
    predicate: str | None
    total: int
    done: int
    created: int
    requeued: int
    state: ReplayState
    error: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class ReplayResult(msgspec.Struct, kw_only=True):
    """``matched``: events the replay sends (dry run: would send); ``replay``: the job, unless a dry run."""

    dry_run: bool
    matched: int
    replay: Replay | None
