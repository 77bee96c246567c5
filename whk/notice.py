"""What one notification job carries: a snapshot of the rule and its activation at the moment it was
decided, so a retry sends the same message even if the rule changed since."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

__all__ = ["Kind", "Notice", "decode_notice", "encode_notice"]

Kind = Literal["trigger", "repeat", "escalate", "acknowledge", "resolve", "test"]


class Notice(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    alert_id: int
    history_id: int | None
    channel_id: int
    kind: Kind
    step: int = 0
    name: str
    description: str | None = None
    severity: str
    metric: str
    operator: str
    threshold: float
    value: float | None
    consumer_id: int | None
    at: datetime

    @property
    def dedupe_key(self) -> str:
        """One job per (activation, kind, step, channel); reminders also per instant."""
        stamp = f":{self.at.timestamp():.0f}" if self.kind in ("repeat", "test") else ""
        return f"notify:{self.alert_id}:{self.history_id}:{self.kind}:{self.step}:{self.channel_id}{stamp}"

    @property
    def message_id(self) -> str:
        """The webhook-id of a generic webhook notice: stable across the job's retries."""
        return f"msg_alert_{self.dedupe_key.split(':', 1)[1].replace(':', '_')}"


def encode_notice(notice: Notice) -> bytes:
    return msgspec.json.encode(notice)


def decode_notice(payload: bytes) -> Notice:
    return msgspec.json.decode(payload, type=Notice)
