"""Standard Webhooks signing: known-answer vector, rotation, verification failures, interop."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks

from whk.errors import WhkError
from whk.signing import (
    SigningError,
    decode_secret,
    generate_secret,
    sign,
    signature_headers,
    verify,
)

KAT_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KAT_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
KAT_TS = 1614265330
KAT_BODY = b'{"test": 2432232314}'
KAT_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_known_answer_vector() -> None:
    assert sign([decode_secret(KAT_SECRET)], KAT_ID, KAT_TS, KAT_BODY) == KAT_SIG


def test_known_answer_vector_verifies() -> None:
    key = decode_secret(KAT_SECRET)
    verify([key], KAT_ID, str(KAT_TS), KAT_BODY, KAT_SIG, now=KAT_TS)


class TestSecrets:
    def test_generated_secret_shape(self) -> None:
        secret = generate_secret()
        assert secret.startswith("whsec_")
        assert len(decode_secret(secret)) == 32

    @pytest.mark.parametrize("n", [24, 32, 64])
    def test_generated_lengths(self, n: int) -> None:
        assert len(decode_secret(generate_secret(n))) == n

    @pytest.mark.parametrize("n", [0, 16, 23, 65, 1000])
    def test_generate_refuses_bad_lengths(self, n: int) -> None:
        with pytest.raises(SigningError) as info:
            generate_secret(n)
        assert info.value.reason == "secret_length"

    def test_generated_secrets_differ(self) -> None:
        assert len({generate_secret() for _ in range(50)}) == 50

    @pytest.mark.parametrize(
        ("secret", "reason"),
        [
            ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "secret_prefix"),
            ("", "secret_prefix"),
            ("WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "secret_prefix"),
            ("whsec_", "secret_length"),
            ("whsec_not base64!!", "secret_base64"),
            ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", "secret_base64"),  # bad padding
            ("whsec_" + base64.b64encode(b"x" * 23).decode(), "secret_length"),
            ("whsec_" + base64.b64encode(b"x" * 65).decode(), "secret_length"),
            ("whsec_" + base64.urlsafe_b64encode(b"\xff" * 30).decode(), "secret_base64"),
        ],
    )
    def test_decode_refuses(self, secret: str, reason: str) -> None:
        with pytest.raises(SigningError) as info:
            decode_secret(secret)
        assert info.value.reason == reason
        assert isinstance(info.value, WhkError)

    def test_decode_accepts_bounds(self) -> None:
        for n in (24, 64):
            raw = bytes(range(n))
            assert decode_secret("whsec_" + base64.b64encode(raw).decode()) == raw


class TestSign:
    def test_one_signature_per_secret_in_order(self) -> None:
        k1, k2, k3 = (decode_secret(generate_secret()) for _ in range(3))
        header = sign([k1, k2, k3], "msg_1", 1700000000, b"{}")
        parts = header.split(" ")
        assert len(parts) == 3
        assert parts == [sign([k], "msg_1", 1700000000, b"{}") for k in (k1, k2, k3)]
        assert all(p.startswith("v1,") for p in parts)

    def test_signature_covers_id_timestamp_and_body(self) -> None:
        key = decode_secret(KAT_SECRET)
        base = sign([key], KAT_ID, KAT_TS, KAT_BODY)
        assert sign([key], KAT_ID + "x", KAT_TS, KAT_BODY) != base
        assert sign([key], KAT_ID, KAT_TS + 1, KAT_BODY) != base
        assert sign([key], KAT_ID, KAT_TS, KAT_BODY + b" ") != base

    def test_binary_body(self) -> None:
        key = decode_secret(KAT_SECRET)
        body = bytes(range(256))
        header = sign([key], "msg_bin", 1, body)
        verify([key], "msg_bin", "1", body, header, now=1)

    @pytest.mark.parametrize("msg_id", ["", "a b", "a\r\nb", "é", "x" * 256])
    def test_refuses_bad_ids(self, msg_id: str) -> None:
        with pytest.raises(SigningError) as info:
            sign([b"k" * 32], msg_id, 1, b"")
        assert info.value.reason == "msg_id"

    def test_refuses_no_secret(self) -> None:
        with pytest.raises(SigningError) as info:
            sign([], "msg", 1, b"")
        assert info.value.reason == "no_secret"
        with pytest.raises(SigningError):
            sign([b""], "msg", 1, b"")

    @pytest.mark.parametrize("ts", [-1, True])
    def test_refuses_bad_timestamp(self, ts: int) -> None:
        with pytest.raises(SigningError) as info:
            sign([b"k" * 32], "msg", ts, b"")
        assert info.value.reason == "timestamp"

    def test_signature_headers(self) -> None:
        key = decode_secret(KAT_SECRET)
        assert signature_headers([key], KAT_ID, KAT_TS, KAT_BODY) == [
            ("webhook-id", KAT_ID),
            ("webhook-timestamp", str(KAT_TS)),
            ("webhook-signature", KAT_SIG),
        ]


class TestVerify:
    key = decode_secret(KAT_SECRET)

    def check(self, header: str = KAT_SIG, *, ts: str = str(KAT_TS), now: int = KAT_TS, **kw: object) -> None:
        verify([self.key], KAT_ID, ts, KAT_BODY, header, now=now, **kw)  # type: ignore[arg-type]

    def reason(self, **kw: object) -> str:
        with pytest.raises(SigningError) as info:
            self.check(**kw)  # type: ignore[arg-type]
        return info.value.reason

    def test_tolerance_edges(self) -> None:
        self.check(now=KAT_TS + 300)
        self.check(now=KAT_TS - 300)
        assert self.reason(now=KAT_TS + 301) == "timestamp_too_old"
        assert self.reason(now=KAT_TS - 301) == "timestamp_too_new"
        self.check(now=KAT_TS + 1000, tolerance=1000)

    @pytest.mark.parametrize("ts", ["", "abc", "1.5", "-1", " 1614265330", "1e9", "\uff11\uff16"])
    def test_malformed_timestamp(self, ts: str) -> None:
        assert self.reason(ts=ts) == "timestamp"

    @pytest.mark.parametrize(
        "header", ["", "v1", "v1,", "v2,abc", "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "v1,!!!!"]
    )
    def test_no_usable_signature(self, header: str) -> None:
        assert self.reason(header=header) == "no_signature"

    @pytest.mark.parametrize(
        "header",
        [
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=",
            "v1," + base64.b64encode(b"\x00" * 32).decode(),
            "v1,AAAA",
            "v1,ZsOp",  # non-ASCII after decoding: bytes comparison must not raise
        ],
    )
    def test_wrong_signature(self, header: str) -> None:
        assert self.reason(header=header) == "no_match"

    def test_any_listed_signature_may_match(self) -> None:
        self.check(header=f"v1a,xyz v1,AAAA {KAT_SIG}  v2,foo")
        self.check(header=f"{KAT_SIG} v1,AAAA")

    def test_non_ascii_header_does_not_raise_type_errors(self) -> None:
        assert self.reason(header="v1,ñññ") == "no_signature"

    def test_rotation_old_and_new_keys(self) -> None:
        old, new = decode_secret(generate_secret()), decode_secret(generate_secret())
        header = sign([new, old], "msg_r", 10, b"x")
        verify([old], "msg_r", "10", b"x", header, now=10)  # receiver still on the old key
        verify([new], "msg_r", "10", b"x", header, now=10)  # receiver already on the new key
        other = decode_secret(generate_secret())
        with pytest.raises(SigningError):
            verify([other], "msg_r", "10", b"x", header, now=10)
        verify([other, new], "msg_r", "10", b"x", sign([new], "msg_r", 10, b"x"), now=10)

    def test_tampered_body_or_id(self) -> None:
        with pytest.raises(SigningError):
            verify([self.key], KAT_ID, str(KAT_TS), KAT_BODY + b"!", KAT_SIG, now=KAT_TS)
        with pytest.raises(SigningError):
            verify([self.key], "msg_other", str(KAT_TS), KAT_BODY, KAT_SIG, now=KAT_TS)

    def test_no_secrets(self) -> None:
        with pytest.raises(SigningError) as info:
            verify([], KAT_ID, str(KAT_TS), KAT_BODY, KAT_SIG, now=KAT_TS)
        assert info.value.reason == "no_secret"


class TestInterop:
    """Our signatures against the reference ``standardwebhooks`` package, both directions."""

    body = (
        b'{"type":"order.created","timestamp":"2026-01-01T00:00:00Z",'
        b'"data":{"id":1,"name":"A\xc3\xa7a\xc3\xad"}}'
    )

    def test_theirs_verifies_ours(self) -> None:
        secret = generate_secret()
        now = int(time.time())
        headers = dict(signature_headers([decode_secret(secret)], "evt_1", now, self.body))
        assert standardwebhooks.Webhook(secret).verify(self.body, headers)["data"]["id"] == 1

    def test_theirs_verifies_each_of_our_rotation_signatures(self) -> None:
        old, new = generate_secret(), generate_secret()
        now = int(time.time())
        headers = dict(signature_headers([decode_secret(new), decode_secret(old)], "evt_2", now, self.body))
        for secret in (old, new):
            standardwebhooks.Webhook(secret).verify(self.body, headers)
        with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
            standardwebhooks.Webhook(generate_secret()).verify(self.body, headers)

    def test_ours_verifies_theirs(self) -> None:
        secret = generate_secret(48)
        now = int(time.time())
        theirs = standardwebhooks.Webhook(secret).sign(
            "evt_3", datetime.fromtimestamp(now, tz=UTC), self.body.decode()
        )
        verify([decode_secret(secret)], "evt_3", str(now), self.body, theirs, now=now)
        assert theirs == sign([decode_secret(secret)], "evt_3", now, self.body)

    def test_kat_through_their_signer(self) -> None:
        theirs = standardwebhooks.Webhook(KAT_SECRET).sign(
            KAT_ID, datetime.fromtimestamp(KAT_TS, tz=UTC), KAT_BODY.decode()
        )
        assert theirs == KAT_SIG
