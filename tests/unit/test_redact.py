"""whk.redact: the one masking rule of the attempt log and the development mock endpoints."""

from __future__ import annotations

import pytest

from whk.redact import MASK, looks_secret, mask_headers


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "proxy-authorization",
        "COOKIE",
        "X-Api-Key",
        "api-key",
        "X-Acme-Token",
        "X-Client-Secret",
        "X-Password",
        "X-Partner-ApiKey",
        "X-Auth-User",
    ],
)
def test_credential_names_are_masked(name: str):
    assert looks_secret(name)
    assert mask_headers([(name, "s3cr3t")]) == {name: MASK}


def test_plain_and_own_headers_stay_readable():
    headers = [
        ("Content-Type", "application/json"),
        ("webhook-id", "msg_1"),
        ("webhook-timestamp", "1700000000"),
        ("webhook-signature", "v1,abc"),
        ("X-Tenant", "acme"),
    ]
    assert mask_headers(headers) == dict(headers)


def test_configured_credential_names_are_masked_whatever_they_are_called():
    headers = [("X-Partner", "s3cr3t"), ("Webhook-Id", "s3cr3t"), ("X-Tenant", "acme")]
    assert mask_headers(headers, credential_names={"x-partner", "webhook-id"}) == {
        "X-Partner": MASK,
        "Webhook-Id": MASK,
        "X-Tenant": "acme",
    }
