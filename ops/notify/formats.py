"""Notification bodies, one builder per channel type, each following its published format. Pure.

* Slack incoming webhook: ``{"text", "blocks"}`` (text is the fallback shown in notifications).
* PagerDuty Events API v2: ``trigger`` / ``acknowledge`` / ``resolve`` with ``dedup_key`` =
  ``whk-alert-<rule id>``, stable per rule, so PagerDuty groups every trigger of a rule into one incident
  and the resolve closes it.
* Generic webhook: a Standard Webhooks event (``type``, ``timestamp``, ``data``), signed by the caller.
* E-mail: subject and plain-text body.
"""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

from whk.notice import Notice

__all__ = ["email_message", "event_type", "pagerduty_body", "slack_body", "summary", "webhook_body"]

_VERB = {
    "trigger": "FIRING",
    "repeat": "STILL FIRING",
    "escalate": "ESCALATED",
    "acknowledge": "ACKNOWLEDGED",
    "resolve": "RESOLVED",
    "test": "TEST",
}
_PD_SEVERITY = {"critical": "critical", "warning": "warning", "info": "info"}


def _value(v: float | None) -> str:
    return "no data" if v is None else f"{v:g}"


def summary(n: Notice) -> str:
    """One line: ``[FIRING] orders failing: failure_rate 0.5 > 0.2``."""
    verb = _VERB[n.kind] + (f" (step {n.step})" if n.kind == "escalate" else "")
    return f"[{verb}] {n.name}: {n.metric} {_value(n.value)} {n.operator} {n.threshold:g}"


def event_type(n: Notice) -> str:
    return {
        "trigger": "whk.alert.firing",
        "repeat": "whk.alert.firing",
        "escalate": "whk.alert.escalated",
        "acknowledge": "whk.alert.acknowledged",
        "resolve": "whk.alert.resolved",
        "test": "whk.alert.test",
    }[n.kind]


def details(n: Notice) -> dict[str, Any]:
    return {
        "alert_id": n.alert_id,
        "history_id": n.history_id,
        "name": n.name,
        "description": n.description,
        "severity": n.severity,
        "metric": n.metric,
        "operator": n.operator,
        "threshold": n.threshold,
        "value": n.value,
        "consumer_id": n.consumer_id,
        "kind": n.kind,
        "escalation_step": n.step,
        "at": n.at.isoformat(),
    }


def slack_body(n: Notice) -> dict[str, Any]:
    fields = [
        {"type": "mrkdwn", "text": f"*Severity*\n{n.severity}"},
        {"type": "mrkdwn", "text": f"*Metric*\n`{n.metric}`"},
        {"type": "mrkdwn", "text": f"*Value*\n{_value(n.value)}"},
        {"type": "mrkdwn", "text": f"*Condition*\n{n.operator} {n.threshold:g}"},
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": summary(n)[:150]}},
        {"type": "section", "fields": fields},
    ]
    if n.description:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": n.description[:3000]}})
    context = f"WHK alert #{n.alert_id}" + (f" · activation #{n.history_id}" if n.history_id else "")
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"{context} · {n.at.isoformat()}"}]}
    )
    return {"text": summary(n), "blocks": blocks}


def pagerduty_action(n: Notice) -> str:
    return {"acknowledge": "acknowledge", "resolve": "resolve"}.get(n.kind, "trigger")


def pagerduty_body(n: Notice, routing_key: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": pagerduty_action(n),
        "dedup_key": f"whk-alert-{n.alert_id}",
    }
    if body["event_action"] == "trigger":
        body["payload"] = {
            "summary": summary(n)[:1024],
            "source": "whk",
            "severity": _PD_SEVERITY.get(n.severity, "warning"),
            "timestamp": n.at.isoformat(),
            "component": n.metric,
            "group": f"consumer-{n.consumer_id}" if n.consumer_id is not None else "platform",
            "class": "whk.alert",
            "custom_details": details(n),
        }
        body["client"] = "WHK"
    return body


def webhook_body(n: Notice) -> dict[str, Any]:
    return {"type": event_type(n), "timestamp": n.at.isoformat(), "data": details(n)}


def email_message(n: Notice, *, sender: str, to: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = f"[WHK] {summary(n)}"[:250]
    msg["From"] = sender
    msg["To"] = to
    lines = [summary(n), ""]
    lines += [f"{k}: {v}" for k, v in details(n).items() if v is not None]
    msg.set_content("\n".join(lines) + "\n")
    return msg
