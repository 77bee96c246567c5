"""whk.secretbox: AES-GCM blobs that name their key and are bound to their row."""

from __future__ import annotations

import base64

import pytest

from whk.secretbox import SecretBox, SecretBoxError

K1 = base64.b64encode(b"\x01" * 32).decode()
K2 = base64.b64encode(b"\x02" * 32).decode()


def test_round_trip_and_fresh_nonce():
    box = SecretBox.from_spec(f"k1:{K1}")
    a = box.encrypt(b"whsec_abc", aad="7")
    b = box.encrypt(b"whsec_abc", aad="7")
    assert a != b
    assert box.decrypt(a, aad="7") == box.decrypt(b, aad="7") == b"whsec_abc"


def test_blob_is_bound_to_its_row():
    box = SecretBox.from_spec(f"k1:{K1}")
    blob = box.encrypt(b"secret", aad="7")
    with pytest.raises(SecretBoxError, match="cannot be opened"):
        box.decrypt(blob, aad="8")


def test_tampering_is_detected():
    box = SecretBox.from_spec(f"k1:{K1}")
    blob = bytearray(box.encrypt(b"secret", aad="1"))
    blob[-1] ^= 1
    with pytest.raises(SecretBoxError):
        box.decrypt(bytes(blob), aad="1")


def test_rotation_new_key_encrypts_old_keys_still_open():
    old = SecretBox.from_spec(f"k1:{K1}")
    sealed_by_old = old.encrypt(b"x", aad="1")
    rotated = SecretBox.from_spec(f"k2:{K2},k1:{K1}")
    assert rotated.active_key_id == "k2"
    assert rotated.decrypt(sealed_by_old, aad="1") == b"x"
    assert b"k2" in rotated.encrypt(b"y", aad="1")[:8]
    with pytest.raises(SecretBoxError, match="not configured"):
        SecretBox.from_spec(f"k2:{K2}").decrypt(sealed_by_old, aad="1")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("nokey", "key_id:base64key"),
        ("k1:not-base64!", "base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", "32 bytes"),
        (f"bad id:{K1}", "key id"),
    ],
)
def test_bad_specs_are_refused(spec, message):
    with pytest.raises(SecretBoxError, match=message):
        SecretBox.from_spec(spec)


def test_not_a_blob():
    with pytest.raises(SecretBoxError, match="not a WHK"):
        SecretBox.from_spec(f"k1:{K1}").decrypt(b"plaintext", aad="1")
