"""No plaintext secret or API key at rest (pg_dump), and `whk secrets rotate`."""

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.api_platform import admin_key, consumer_key, make_consumer, secret_part, settings_for
from tests.support.secrets_fixture import add_secret, add_webhook, new_whsec
from whk.secretbox import SecretBox, SecretDecryptError, generate_key_entry, rotate_command, row_aad

pytestmark = pytest.mark.db

PG_RUN = Path(__file__).resolve().parents[2] / "scripts" / "pg-run"


def test_pg_dump_has_no_plaintext_secret_or_key(pg_server, db_url, conn):
    box = SecretBox.from_settings(settings_for(db_url, WHK_SECRET_KEYS=generate_key_entry("k1")))
    cid = make_consumer(conn, "acme")
    credential = "outbound-credential-" + "x" * 20
    wid = add_webhook(conn, cid, box, credential=credential)
    secrets = [new_whsec() for _ in range(3)]
    for s in secrets:
        add_secret(conn, wid, box, s)
    keys = [admin_key(conn), consumer_key(conn, cid)]
    dbname = db_url.rsplit("/", 1)[1]
    dump = subprocess.run(
        [str(PG_RUN), "pg_dump", "-h", pg_server.host, "-p", str(pg_server.port), "-U", "postgres", dbname],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert "COPY whk.webhook_secrets" in dump  # the data is in the dump...
    assert "COPY whk.api_keys" in dump
    # ...but never a plaintext secret (the table's COMMENT mentions the "(whsec_)" format only).
    assert re.findall(r"whsec_[A-Za-z0-9+/=]{16,}", dump) == []
    assert re.findall(r"whk_[a-z0-9]{12}_[A-Za-z0-9_-]{20,}", dump) == []
    for s in secrets:
        assert s[len("whsec_") :] not in dump
    assert credential not in dump
    for key in keys:
        assert key not in dump
        assert secret_part(key) not in dump


def test_rotate_reencrypts_every_row_and_reports_copied_ones(db_url, conn):
    old_entry, new_entry = generate_key_entry("old"), generate_key_entry("new")
    old_box = SecretBox.from_settings(settings_for(db_url, WHK_SECRET_KEYS=old_entry))
    cid = make_consumer(conn, "acme")
    wid = add_webhook(conn, cid, old_box, credential="cred")
    secrets = {add_secret(conn, wid, old_box, new_whsec()): None for _ in range(3)}
    for sid in secrets:
        blob = conn.execute("SELECT secret_enc FROM whk.webhook_secrets WHERE id = %s", (sid,)).fetchone()[0]
        secrets[sid] = old_box.decrypt(blob, row_id=row_aad("webhook_secrets", sid))
    first, second, third = list(secrets)
    # An attacker (or a bad restore) copies one row's ciphertext onto another row.
    conn.execute(
        "UPDATE whk.webhook_secrets SET secret_enc = "
        "(SELECT secret_enc FROM whk.webhook_secrets WHERE id = %s) WHERE id = %s",
        (first, third),
    )
    settings = settings_for(db_url, WHK_SECRET_KEYS=f"{new_entry},{old_entry}")
    out: list[str] = []
    assert rotate_command(settings, echo=out.append) == 1
    assert "3 re-encrypted" in out[0]  # two secrets and the outbound credential
    assert f"webhook_secrets:{third}" in "\n".join(out)
    assert "1 failed" in out[0]
    new_box = SecretBox.from_settings(settings_for(db_url, WHK_SECRET_KEYS=new_entry))
    for sid in (first, second):
        blob = conn.execute("SELECT secret_enc FROM whk.webhook_secrets WHERE id = %s", (sid,)).fetchone()[0]
        assert SecretBox.key_id_of(bytes(blob)) == "new"
        assert new_box.decrypt(blob, row_id=row_aad("webhook_secrets", sid)) == secrets[sid]
    cred = conn.execute(
        "SELECT auth_credential_enc FROM whk.whk_01_webhooks WHERE id = %s", (wid,)
    ).fetchone()[0]
    assert new_box.decrypt(cred, row_id=row_aad("whk_01_webhooks", wid)) == b"cred"
    # The copied row is left untouched and still does not decrypt (reported, not crashed on).
    blob = conn.execute("SELECT secret_enc FROM whk.webhook_secrets WHERE id = %s", (third,)).fetchone()[0]
    with pytest.raises(SecretDecryptError):
        old_box.decrypt(blob, row_id=row_aad("webhook_secrets", third))
    # Re-running only reports the bad row again; the rest is current.
    out.clear()
    assert rotate_command(settings, echo=out.append) == 1
    assert "0 re-encrypted" in out[0]
    assert "3 already current" in out[0]


def test_cli_entry_points_exist():
    """`whk secrets rotate` runs whk.secretbox's rotation; `whk apikey create` uses api.keys."""
    import api.keys
    import whk.secretbox
    from whk_cli import main as cli

    assert cli.build_parser().parse_args(["secrets", "rotate"]).func is cli.cmd_secrets_rotate
    assert cli.rotate_command is whk.secretbox.rotate_command
    assert callable(api.keys.create_api_key)
