"""dispatcher.request: the request of one attempt (pure; signatures checked with `standardwebhooks`)."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from standardwebhooks.webhooks import Webhook

from dispatcher.errors import UnsignedRequestRefused
from dispatcher.models import ClaimedDelivery, WebhookRow
from dispatcher.request import (
    PreparedWebhook,
    build_request,
    loggable_headers,
    message_id,
    prepare_webhook,
    request_body,
)
from dispatcher.retry import RetryPolicy
from tests.support.delivery import TEST_BOX, TEST_SECRET
from whk.redact import MASK
from whk.secretbox import row_aad

OLD_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="


def row(**overrides) -> WebhookRow:  # type: ignore[no-untyped-def]
    fields = {
        "id": 5,
        "consumer_id": 1,
        "url": "https://example.invalid/hook",
        "http_method": "POST",
        "headers": {},
        "auth_type": "none",
        "auth_header_name": None,
        "auth_credential_enc": None,
        "require_ack": False,
        "ack_timeout_seconds": 60,
        "retry_policy": None,
        "timeout_ms": 5000,
        "delivery_mode": "immediate",
        "status": "active",
        "secret_ids": [10, 11],
        "secrets_enc": [
            TEST_BOX.encrypt(TEST_SECRET.encode(), row_id=row_aad("webhook_secrets", 10)),
            TEST_BOX.encrypt(OLD_SECRET.encode(), row_id=row_aad("webhook_secrets", 11)),
        ],
    }
    fields.update(overrides)
    return WebhookRow(**fields)


def delivery(seq: int, batch: uuid.UUID | None = None) -> ClaimedDelivery:
    return ClaimedDelivery(
        delivery_id=seq,
        webhook_id=5,
        event_id=uuid.UUID(int=seq),
        event_type="order.created",
        attempts=0,
        schedule_offset=0,
        batch_id=batch,
        commit_seq=seq,
        ordering_key=None,
        payload=json.dumps({"type": "order.created", "timestamp": "t", "data": {"n": seq}}),
    )


def test_signed_with_every_valid_secret_and_verifiable():
    hook = prepare_webhook(row(), TEST_BOX)
    assert hook.config_error is None and len(hook.signing_keys) == 2
    group = [delivery(1)]
    body = request_body(group)
    now = int(time.time())
    req = build_request(
        hook, msg_id=message_id(group), body=body, timestamp=now, deadline_s=3, user_agent="UA"
    )
    h = dict(req.headers)
    assert h["webhook-id"] == "msg_" + uuid.UUID(int=1).hex
    assert h["webhook-timestamp"] == str(now)
    assert len(h["webhook-signature"].split(" ")) == 2
    for secret in (TEST_SECRET, OLD_SECRET):
        assert Webhook(secret).verify(req.body, h)["data"] == {"n": 1}
    assert h["User-Agent"] == "UA" and h["Content-Type"] == "application/json"
    assert req.deadline_s == 3 and req.method == "POST"


def test_batch_body_is_an_array_in_commit_order_with_the_batch_id():
    batch = uuid.uuid4()
    group = [delivery(1, batch), delivery(2, batch), delivery(3, batch)]
    assert message_id(group) == f"batch_{batch.hex}"
    assert [e["data"]["n"] for e in json.loads(request_body(group))] == [1, 2, 3]


def test_custom_headers_cannot_override_framing_or_signature():
    hook = prepare_webhook(
        row(headers={"X-Tenant": "acme", "webhook-id": "forged", "Content-Length": "0", "Host": "evil"}),
        TEST_BOX,
    )
    req = build_request(hook, msg_id="msg_1", body=b"{}", timestamp=1, deadline_s=1, user_agent="UA")
    names = [n.lower() for n, _ in req.headers]
    assert names.count("webhook-id") == 1 and dict(req.headers)["webhook-id"] == "msg_1"
    assert "host" not in names and "content-length" not in names
    assert dict(req.headers)["X-Tenant"] == "acme"


def test_header_injection_is_a_configuration_error():
    hook = prepare_webhook(row(headers={"X-Evil": "a\r\nInjected: 1"}), TEST_BOX)
    assert hook.config_error is not None and "forbidden characters" in hook.config_error


def test_outbound_auth_and_masking():
    cred = TEST_BOX.encrypt(b"s3cr3t", row_id=row_aad("whk_01_webhooks", 5))
    bearer = prepare_webhook(row(auth_type="bearer", auth_credential_enc=cred), TEST_BOX)
    api_key = prepare_webhook(
        row(
            auth_type="api_key",
            auth_header_name="X-Partner",
            auth_credential_enc=cred,
            headers={"X-Token": "t"},
        ),
        TEST_BOX,
    )
    for hook, name, value in ((bearer, "Authorization", "Bearer s3cr3t"), (api_key, "X-Partner", "s3cr3t")):
        req = build_request(hook, msg_id="m", body=b"{}", timestamp=1, deadline_s=1, user_agent="UA")
        assert dict(req.headers)[name] == value
        logged = loggable_headers(hook, req.headers)
        assert logged[name] == MASK
        assert "s3cr3t" not in json.dumps(logged)
    logged = loggable_headers(
        api_key,
        build_request(api_key, msg_id="m", body=b"", timestamp=1, deadline_s=1, user_agent="U").headers,
    )
    assert logged["X-Token"] == MASK and logged["webhook-id"] == "m"
    # A credential header is masked whatever its name, even one WHK also sends itself.
    odd = prepare_webhook(
        row(auth_type="api_key", auth_header_name="Webhook-Id", auth_credential_enc=cred),
        TEST_BOX,
    )
    assert loggable_headers(odd, [("Webhook-Id", "s3cr3t"), ("User-Agent", "UA")]) == {
        "Webhook-Id": MASK,
        "User-Agent": "UA",
    }


def test_missing_keys_or_wrong_row_become_configuration_errors():
    assert prepare_webhook(row(), None).config_error is not None
    moved = row(
        secret_ids=[99],
        secrets_enc=[TEST_BOX.encrypt(TEST_SECRET.encode(), row_id=row_aad("webhook_secrets", 10))],
    )
    assert "does not belong to this row" in (prepare_webhook(moved, TEST_BOX).config_error or "")
    no_cred = prepare_webhook(row(auth_type="basic"), TEST_BOX)
    assert "no credential" in (no_cred.config_error or "")


def test_a_webhook_without_a_secret_is_a_configuration_error_and_never_built_unsigned():
    hook = prepare_webhook(row(secret_ids=[], secrets_enc=[]), TEST_BOX)
    assert hook.signing_keys == ()
    assert "no valid signing secret" in (hook.config_error or "")
    with pytest.raises(UnsignedRequestRefused, match="without a webhook-signature"):
        build_request(hook, msg_id="m", body=b"{}", timestamp=5, deadline_s=1, user_agent="U")


def test_the_request_builder_refuses_a_hand_made_webhook_without_keys():
    # Not through prepare_webhook (which already refuses): the builder's own check holds on its own.
    signed = prepare_webhook(row(), TEST_BOX)
    bare = PreparedWebhook(signed.row, (), signed.fixed_headers, signed.masked_names, signed.retry_policy)
    with pytest.raises(UnsignedRequestRefused):
        build_request(bare, msg_id="m", body=b"{}", timestamp=5, deadline_s=1, user_agent="U")
    req = build_request(signed, msg_id="m", body=b"{}", timestamp=5, deadline_s=1, user_agent="U")
    assert dict(req.headers)["webhook-signature"].startswith("v1,")


def test_the_effective_retry_policy_is_read_as_loaded():
    """The row carries whk.effective_retry_policy's result (global setting + override, merged in SQL)."""
    hook = prepare_webhook(row(retry_policy={"schedule_s": [9], "jitter": 0.0}), TEST_BOX)
    assert hook.retry_policy == RetryPolicy(schedule_s=(9,), jitter=0.0)
    bad = prepare_webhook(row(retry_policy={"schedule_s": [-1]}), TEST_BOX)
    assert bad.config_error is not None and bad.retry_policy == RetryPolicy()
