"""The development mock's signature verdict (api.devmock.verdict.judge): which webhook verified, or why."""

from __future__ import annotations

from api.devmock.verdict import judge
from whk.signing import decode_secret, generate_secret, signature_headers

NOW = 1_800_000_000
BODY = b'{"type":"order.created"}'


def _headers(secret: str, *, ts: int = NOW) -> dict[str, str]:
    return dict(signature_headers([decode_secret(secret)], "msg_1", ts, BODY))


def test_no_webhook_means_nothing_to_verify_with():
    v = judge({}, {}, _headers(generate_secret()), BODY, now=NOW, tolerance=300)
    assert (v.webhook_id, v.ok) == (None, None)
    assert v.reason is not None and "no webhook targets" in v.reason


def test_the_webhook_whose_secret_verifies_is_named():
    a, b = generate_secret(), generate_secret()
    keys = {3: [decode_secret(a)], 8: [decode_secret(generate_secret()), decode_secret(b)]}
    v = judge(keys, {}, _headers(b), BODY, now=NOW, tolerance=300)
    assert (v.webhook_id, v.ok, v.reason) == (8, True, None)


def test_why_not_for_each_webhook():
    keys = {3: [decode_secret(generate_secret())]}
    v = judge(
        keys,
        {9: "its signing secret cannot be read (x)"},
        _headers(generate_secret()),
        BODY,
        now=NOW,
        tolerance=300,
    )
    assert v.ok is False and v.webhook_id is None  # two candidates: none named
    assert v.reason == (
        "webhook 3: no_match: no signature matches the webhook's secrets; "
        "webhook 9: its signing secret cannot be read (x)"
    )


def test_stale_unsigned_and_tampered():
    secret = generate_secret()
    keys = {5: [decode_secret(secret)]}
    stale = judge(keys, {}, _headers(secret, ts=NOW - 301), BODY, now=NOW, tolerance=300)
    assert (stale.webhook_id, stale.ok) == (5, False)
    assert stale.reason is not None and "timestamp_too_old" in stale.reason
    assert judge(keys, {}, _headers(secret, ts=NOW - 301), BODY, now=NOW, tolerance=400).ok is True
    unsigned = judge(keys, {}, {}, BODY, now=NOW, tolerance=300)
    assert (unsigned.ok, unsigned.reason) == (False, "unsigned: no webhook-signature header")
    tampered = judge(keys, {}, _headers(secret), BODY + b" ", now=NOW, tolerance=300)
    assert tampered.ok is False and "no_match" in (tampered.reason or "")
