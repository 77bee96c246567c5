"""Did a request to a mock endpoint carry a valid signature of the webhook that targets the mock, and if
not, why? Pure: the controller passes the decrypted secrets, the headers, the body and ``now``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from whk.signing import SigningError, verify

__all__ = ["Verdict", "judge"]

REASON_MAX = 1000


@dataclass(frozen=True, slots=True)
class Verdict:
    """``ok`` None = no webhook targets the mock (nothing to verify with); ``webhook_id`` = the webhook
    whose secret verified, or the only one that could have; ``reason`` says why not."""

    webhook_id: int | None
    ok: bool | None
    reason: str | None


def judge(
    keys: Mapping[int, Sequence[bytes]],
    problems: Mapping[int, str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: int,
    tolerance: int,
) -> Verdict:
    """``keys``: each targeting webhook's current secrets; ``problems``: webhooks whose secrets could not
    be read (decryption failed), with why. ``headers`` have lower-case names."""
    webhooks = sorted({*keys, *problems})
    only = webhooks[0] if len(webhooks) == 1 else None
    if not webhooks:
        return Verdict(None, None, "no webhook targets this mock, so there is no secret to verify with")
    if "webhook-signature" not in headers:
        return Verdict(only, False, "unsigned: no webhook-signature header")
    why: list[str] = []
    for webhook_id in webhooks:
        if webhook_id in problems:
            why.append(f"webhook {webhook_id}: {problems[webhook_id]}")
            continue
        try:
            verify(
                keys[webhook_id],
                headers.get("webhook-id", ""),
                headers.get("webhook-timestamp", ""),
                body,
                headers["webhook-signature"],
                now=now,
                tolerance=tolerance,
            )
        except SigningError as exc:
            why.append(f"webhook {webhook_id}: {exc.reason}: {exc.message}")
            continue
        return Verdict(webhook_id, True, None)
    return Verdict(only, False, "; ".join(why)[:REASON_MAX])
