"""The parameters ``Repository.record`` binds for ``whk.record_outcomes`` (built in one pass)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import msgspec

from dispatcher.models import AttemptLog, DeliveryOutcome, RequestOutcome
from dispatcher.repository import record_params

T0 = datetime(2026, 12, 7, 18, 0, tzinfo=UTC)
T1 = datetime(2026, 12, 7, 18, 5, tzinfo=UTC)


def _attempt(webhook_id: int, outcome: str, batch: uuid.UUID | None = None) -> AttemptLog:
    return AttemptLog(
        webhook_id=webhook_id,
        success=outcome == "delivered",
        failure=outcome == "retry",
        gone=False,
        outcome=outcome,
        request_method="POST",
        request_url="https://example.com/hook",
        started_at=T0,
        batch_id=batch,
    )


def test_each_delivery_points_at_its_request_and_keeps_its_columns() -> None:
    batch = uuid.uuid4()
    requests = [
        RequestOutcome(_attempt(1, "delivered"), (DeliveryOutcome(10, 1, "delivered"),)),
        RequestOutcome(
            _attempt(2, "retry", batch),
            (
                DeliveryOutcome(20, 2, "pending", next_attempt_at=T1),
                DeliveryOutcome(21, 3, "dead", dead_reason="http 500 (after 3 attempts)"),
            ),
        ),
        RequestOutcome(
            _attempt(1, "awaiting_ack"), (DeliveryOutcome(30, 1, "awaiting_ack", ack_deadline=T1),)
        ),
    ]
    params = record_params("d-1", requests)
    assert params["dispatcher"] == "d-1"
    assert params["ids"] == [10, 20, 21, 30]
    assert params["attempt_ix"] == [0, 1, 1, 2]
    assert params["attempt_no"] == [1, 2, 3, 1]
    assert params["state"] == ["delivered", "pending", "dead", "awaiting_ack"]
    assert params["next_at"] == [None, T1, None, None]
    assert params["ack_deadline"] == [None, None, None, T1]
    assert params["dead_reason"] == [None, None, "http 500 (after 3 attempts)", None]
    attempts = json.loads(params["attempts"])
    assert [a["ix"] for a in attempts] == [0, 1, 2]
    assert [(a["webhook_id"], a["outcome"], a["batch_id"]) for a in attempts] == [
        (1, "delivered", None),
        (2, "retry", str(batch)),
        (1, "awaiting_ack", None),
    ]


def test_the_position_in_the_group_wins_over_a_stale_ix() -> None:
    # An outcome written apart (one webhook at a time) keeps the ix of its first group: renumbered here.
    stale = msgspec.structs.replace(_attempt(1, "delivered"), ix=7)
    params = record_params("d", [RequestOutcome(stale, (DeliveryOutcome(1, 1, "delivered"),))])
    assert json.loads(params["attempts"])[0]["ix"] == 0
    assert params["attempt_ix"] == [0]
