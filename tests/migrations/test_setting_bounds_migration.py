"""Migration 0025 setting_bounds: two-sided bounds on every numeric setting, CHECKs on the JSON settings; rows
already outside the bounds stop it before anything changes, each named with its problem."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from tests.support.delivery import make_consumer, make_webhook
from whk import migrate
from whk.errors import MigrationError

pytestmark = pytest.mark.db


def _checks(conn: psycopg.Connection[Any], table: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = %s::regclass AND contype = 'c'",
        (f"whk.{table}",),
    ).fetchall()
    return {str(n): str(d) for n, d in rows}


def test_rows_outside_the_bounds_are_named_and_nothing_is_applied(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrate.migrate(conn, target=24)
        acme = make_consumer(conn, "acme", quota_deliveries_per_day=3_000_000_000)
        poisoned = make_webhook(conn, acme, "https://example.com/a", rate_limit_per_second=5e-324)
        fine = make_webhook(conn, acme, "https://example.com/b", rate_limit_per_second=10)
        policy = make_webhook(conn, acme, "https://example.com/c", retry_policy={"schedule": [1]})
        conn.execute(
            "UPDATE whk.whk_05_configuracoes SET value = '0' WHERE key = 'rate_limit.api_per_minute'"
        )
        before = _checks(conn, "whk_01_webhooks")

        with pytest.raises(MigrationError) as caught:
            migrate.migrate(conn)

        message = caught.value.message
        assert message.startswith("0025_setting_bounds.sql: settings outside their new bounds: ")
        assert f"whk.whk_04_assinantes (1 rows; id {acme}: quota_deliveries_per_day = 3000000000" in message
        assert f"whk.whk_01_webhooks (1 rows; id {poisoned}: rate_limit_per_second = " in message
        assert f"id {policy}: retry_policy: unknown member schedule" in message
        assert (
            "whk.whk_05_configuracoes (1 rows; key rate_limit.api_per_minute:"
            " rate_limit.api_per_minute must be" in message
        )
        assert f"id {fine}:" not in message
        assert caught.value.hint is not None and "docs/configuration.md" in caught.value.hint
        assert isinstance(caught.value.__cause__, psycopg.errors.CheckViolation)
        assert conn.execute("SELECT max(version) FROM whk.schema_migrations").fetchone() == (24,)
        assert _checks(conn, "whk_01_webhooks") == before

        conn.execute(
            "UPDATE whk.whk_04_assinantes SET quota_deliveries_per_day = 1000000000 WHERE id = %s", (acme,)
        )
        conn.execute(
            "UPDATE whk.whk_01_webhooks SET rate_limit_per_second = 0.001 WHERE id = %s", (poisoned,)
        )
        conn.execute(
            "UPDATE whk.whk_01_webhooks SET retry_policy = %s::jsonb WHERE id = %s",
            (json.dumps({"schedule_s": [1]}), policy),
        )
        conn.execute(
            "UPDATE whk.whk_05_configuracoes SET value = '600' WHERE key = 'rate_limit.api_per_minute'"
        )
        migrate.migrate(conn)

        checks = _checks(conn, "whk_01_webhooks")
        rate = checks["whk_01_webhooks_rate_limit_per_second_check"]
        assert "0.001" in rate and "1000000" in rate, rate
        assert "whk.retry_policy_problem(retry_policy)" in checks["whk_01_webhooks_retry_policy_bounds"]
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "UPDATE whk.whk_01_webhooks SET rate_limit_per_second = 5e-324 WHERE id = %s", (fine,)
            )
