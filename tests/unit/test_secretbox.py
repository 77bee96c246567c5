import base64
import logging
import os

import pytest

from whk.errors import SettingsError
from whk.secretbox import (
    DEV_KEY_ID,
    SecretBox,
    SecretDecryptError,
    SecretKeyMissing,
    generate_key_entry,
    parse_keys,
    row_aad,
)
from whk.settings import load_settings


def _key() -> bytes:
    return os.urandom(32)


def box(**keys: bytes) -> SecretBox:
    return SecretBox(keys=keys, primary=next(iter(keys)))


def test_round_trip_and_key_id_inside():
    b = box(k1=_key())
    blob = b.encrypt(b"whsec_abc", row_id=row_aad("webhook_secrets", 7))
    assert b"whsec_abc" not in blob
    assert SecretBox.key_id_of(blob) == "k1"
    assert b.decrypt(blob, row_id="webhook_secrets:7") == b"whsec_abc"


def test_nonce_is_fresh_per_encryption():
    b = box(k1=_key())
    assert b.encrypt(b"x", row_id="t:1") != b.encrypt(b"x", row_id="t:1")


@pytest.mark.parametrize("other_row", ["webhook_secrets:8", "whk_01_webhooks:7", ""])
def test_ciphertext_copied_to_another_row_fails(other_row):
    b = box(k1=_key())
    blob = b.encrypt(b"s3cr3t-value", row_id="webhook_secrets:7")
    with pytest.raises(SecretDecryptError) as err:
        b.decrypt(blob, row_id=other_row)
    assert err.value.row == other_row
    assert err.value.key_id == "k1"
    assert "s3cr3t" not in str(err.value)


def test_old_key_still_decrypts_and_rotation_is_detected():
    old, new = _key(), _key()
    blob = box(old=old).encrypt(b"s", row_id="t:1")
    both = SecretBox(keys={"new": new, "old": old}, primary="new")
    assert both.decrypt(blob, row_id="t:1") == b"s"
    assert both.needs_rotation(blob)
    assert not both.needs_rotation(both.encrypt(b"s", row_id="t:1"))


def test_unknown_key_id_is_reported():
    blob = box(gone=_key()).encrypt(b"s", row_id="t:1")
    with pytest.raises(SecretDecryptError, match="not in WHK_SECRET_KEYS") as err:
        box(k1=_key()).decrypt(blob, row_id="t:1")
    assert err.value.key_id == "gone"


@pytest.mark.parametrize("blob", [b"", b"\x01", b"\x02\x02k1" + b"\x00" * 40, b"\x01\x05k1", b"plaintext!!"])
def test_garbage_is_reported_not_crashed_on(blob):
    with pytest.raises(SecretDecryptError):
        box(k1=_key()).decrypt(blob, row_id="t:1")


def test_tampered_ciphertext_fails():
    b = box(k1=_key())
    blob = bytearray(b.encrypt(b"secret", row_id="t:1"))
    blob[-1] ^= 1
    with pytest.raises(SecretDecryptError, match="altered"):
        b.decrypt(bytes(blob), row_id="t:1")


def test_parse_keys_order_and_errors():
    e1, e2 = generate_key_entry("a"), generate_key_entry("b")
    keys = parse_keys(f"{e1}, {e2}")
    assert list(keys) == ["a", "b"]
    assert all(len(k) == 32 for k in keys.values())
    short = base64.b64encode(b"x" * 16).decode()
    for raw, msg in [
        (f"a:{short}", "16 bytes"),
        ("a:not base64!", "base64"),
        (f"{e1},{e1}", "twice"),
        (f"bad id:{short}", "bad key id"),
    ]:
        with pytest.raises(SettingsError, match=msg):
            parse_keys(raw)


def test_production_refuses_to_start_without_keys():
    settings = load_settings({"WHK_ENV": "production"})
    with pytest.raises(SecretKeyMissing):
        SecretBox.from_settings(settings)


def test_production_with_keys(monkeypatch):
    entry = generate_key_entry("prod1")
    b = SecretBox.from_settings(load_settings({"WHK_ENV": "production", "WHK_SECRET_KEYS": entry}))
    assert b.primary == "prod1"


def test_development_default_key_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="whk.secretbox"):
        b = SecretBox.from_settings(load_settings({"WHK_ENV": "development"}))
    assert b.primary == DEV_KEY_ID
    assert "development key" in caplog.text


def test_settings_reject_malformed_keys():
    with pytest.raises(SettingsError, match="WHK_SECRET_KEYS"):
        load_settings({"WHK_SECRET_KEYS": "no-colon-here"})


def test_transitional_bare_id_aad_opens_table_qualified_rows():
    """The dispatcher's first convention (aad=str(id)) still opens what the API seals with row_aad."""
    b = box(k1=_key())
    sealed_by_api = b.encrypt(b"whsec_x", row_id=row_aad("webhook_secrets", 42))
    assert b.decrypt(sealed_by_api, aad="42") == b"whsec_x"
    assert b.decrypt(b.encrypt(b"c", aad="42"), aad="42") == b"c"
    with pytest.raises(SecretDecryptError):
        b.decrypt(sealed_by_api, aad="43")
    with pytest.raises(SecretDecryptError):
        b.decrypt(sealed_by_api, row_id=row_aad("whk_01_webhooks", 42))


def test_exactly_one_associated_data_keyword():
    b = box(k1=_key())
    with pytest.raises(TypeError):
        b.encrypt(b"x")
    with pytest.raises(TypeError):
        b.encrypt(b"x", row_id="a", aad="b")
