"""Every numeric setting has bounds in the API schema AND as a SQL CHECK (issue 15 §1, the poison-value
test): out-of-range values are refused through the API (400 problem+json naming the field, for admin and
consumer keys) and directly in SQL (check_violation); the bounds themselves are accepted by both, so the two
agree. The list of bounds is docs/configuration.md "Bounds of every setting"."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from tests.support.resources import World

pytestmark = pytest.mark.db

HOOK = {"name": "bounded", "url": "http://127.0.0.1:9/h", "event_types": ["order.*"]}
CONDITION = {"metric": "dead_letters", "operator": ">", "threshold": 1}
TINY = 5e-324  # the denormal that killed the dispatcher

# (field as a JSON body fragment, the pointer the refusal names)
WEBHOOK_OUT_OF_RANGE: list[tuple[dict[str, Any], str]] = [
    *[({"rate_limit_per_second": v}, "/rate_limit_per_second") for v in (TINY, 0, 0.0009, -1, 1_000_001)],
    *[({"rate_limit_burst": v}, "/rate_limit_burst") for v in (0, 1_000_001)],
    *[({"max_in_flight": v}, "/max_in_flight") for v in (0, 1001)],
    *[({"batch_size": v}, "/batch_size") for v in (0, 1001)],
    *[({"batch_window_ms": v}, "/batch_window_ms") for v in (-1, 3_600_001)],
    *[({"delay_seconds": v}, "/delay_seconds") for v in (-1, 2_592_001)],
    *[({"timeout_ms": v}, "/timeout_ms") for v in (99, 120_001)],
    *[({"ack_timeout_seconds": v}, "/ack_timeout_seconds") for v in (0, 2_592_001)],
    *[({"payload_version": v}, "/payload_version") for v in (0, 1001)],
    ({"retry_policy": {"schedule_s": [TINY]}}, "/retry_policy/schedule_s/0"),
    ({"retry_policy": {"schedule_s": [1, 604_801]}}, "/retry_policy/schedule_s/1"),
    ({"retry_policy": {"schedule_s": [1] * 31}}, "/retry_policy/schedule_s"),
    ({"retry_policy": {"schedule_s": [1], "jitter": 1.0}}, "/retry_policy/jitter"),
    ({"retry_policy": {"schedule_s": [1], "jitter": -0.1}}, "/retry_policy/jitter"),
    ({"retry_policy": {"schedule_s": [1], "throttle_floor_s": 86_401}}, "/retry_policy/throttle_floor_s"),
    (
        {"retry_policy": {"schedule_s": [1], "retry_after_cap_factor": 0.5}},
        "/retry_policy/retry_after_cap_factor",
    ),
    (
        {"retry_policy": {"schedule_s": [1], "retry_after_cap_factor": 101}},
        "/retry_policy/retry_after_cap_factor",
    ),
    ({"breaker_config": {"failure_threshold": 0}}, "/breaker_config/failure_threshold"),
    ({"breaker_config": {"failure_threshold": 1001}}, "/breaker_config/failure_threshold"),
    ({"breaker_config": {"open_s": TINY}}, "/breaker_config/open_s"),
    ({"breaker_config": {"open_s": 86_401}}, "/breaker_config/open_s"),
    ({"breaker_config": {"open_max_s": TINY}}, "/breaker_config/open_max_s"),
    ({"breaker_config": {"open_max_s": 604_801}}, "/breaker_config/open_max_s"),
    # The old aliases are gone: one shape, the members the SQL reads.
    ({"breaker_config": {"open_seconds": 60}}, "/breaker_config/open_seconds"),
    ({"breaker_config": {"half_open_probes": 1}}, "/breaker_config/half_open_probes"),
]
WEBHOOK_AT_THE_BOUNDS: list[dict[str, Any]] = [
    {
        "rate_limit_per_second": 0.001,
        "rate_limit_burst": 1,
        "max_in_flight": 1,
        "batch_size": 1,
        "batch_window_ms": 0,
        "delay_seconds": 0,
        "timeout_ms": 100,
        "ack_timeout_seconds": 1,
        "payload_version": 1,
        "retry_policy": {"schedule_s": [], "jitter": 0, "throttle_floor_s": 0, "retry_after_cap_factor": 1},
        "breaker_config": {"failure_threshold": 1, "open_s": 0.001, "open_max_s": 0.001},
    },
    {
        "rate_limit_per_second": 1_000_000,
        "rate_limit_burst": 1_000_000,
        "max_in_flight": 1000,
        "batch_size": 1000,
        "batch_window_ms": 3_600_000,
        "delay_seconds": 2_592_000,
        "timeout_ms": 120_000,
        "ack_timeout_seconds": 2_592_000,
        "payload_version": 1000,
        "retry_policy": {
            "schedule_s": [0.001] + [604_800] * 29,
            "jitter": 0.99,
            "throttle_floor_s": 86_400,
            "retry_after_cap_factor": 100,
        },
        "breaker_config": {"failure_threshold": 1000, "open_s": 86_400, "open_max_s": 604_800},
    },
]
CONSUMER_OUT_OF_RANGE: list[tuple[dict[str, Any], str]] = [
    *[({"rate_limit_per_second": v}, "/rate_limit_per_second") for v in (TINY, 0, 0.0009, 1_000_001)],
    *[({"rate_limit_burst": v}, "/rate_limit_burst") for v in (0, 1_000_001)],
    *[({"api_rate_limit_per_minute": v}, "/api_rate_limit_per_minute") for v in (0, 1_000_000_001)],
    *[({"quota_deliveries_per_day": v}, "/quota_deliveries_per_day") for v in (0, 1_000_000_001)],
]
CONSUMER_AT_THE_BOUNDS = [
    {
        "rate_limit_per_second": 0.001,
        "rate_limit_burst": 1,
        "api_rate_limit_per_minute": 1,
        "quota_deliveries_per_day": 1,
    },
    {
        "rate_limit_per_second": 1_000_000,
        "rate_limit_burst": 1_000_000,
        "api_rate_limit_per_minute": 1_000_000_000,
        "quota_deliveries_per_day": 1_000_000_000,
    },
]
ALERT_OUT_OF_RANGE: list[tuple[dict[str, Any], str]] = [
    ({"condition": {**CONDITION, "threshold": -1}}, "/condition/threshold"),
    ({"condition": {**CONDITION, "threshold": 1e12 + 1}}, "/condition/threshold"),
    ({"condition": {**CONDITION, "window_s": 59}}, "/condition/window_s"),
    ({"condition": {**CONDITION, "window_s": 604_801}}, "/condition/window_s"),
    ({"throttle_seconds": -1}, "/throttle_seconds"),
    ({"throttle_seconds": 86_401}, "/throttle_seconds"),
    (
        {"escalation": [{"after_s": 59, "channels": [{"type": "email", "target": "a@b.c"}]}]},
        "/escalation/0/after_s",
    ),
]


def _refused(r: Any, pointer: str) -> None:
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert pointer in [e["pointer"] for e in r.json()["errors"]], r.text


async def _webhook(client: AsyncTestClient[Any], headers: dict[str, str], **over: Any) -> Any:
    return await client.post("/api/whk/webhooks", json={**HOOK, **over}, headers=headers)


@pytest.mark.parametrize("who", ["admin", "consumer"])
async def test_webhook_settings_out_of_range_are_refused_by_the_api(
    client: AsyncTestClient[Any], world: World, conn: psycopg.Connection[Any], who: str
):
    headers = world.admin if who == "admin" else world.a.headers
    owner = {"consumer_id": world.a.consumer_id} if who == "admin" else {}
    r = await _webhook(client, headers, **owner)
    assert r.status_code == 201, r.text
    hid = r.json()["webhook"]["id"]
    before = conn.execute("SELECT w::text FROM whk.whk_01_webhooks w WHERE id = %s", (hid,)).fetchone()
    for fragment, pointer in WEBHOOK_OUT_OF_RANGE:
        _refused(await _webhook(client, headers, **owner, **fragment), pointer)
        _refused(await client.put(f"/api/whk/webhooks/{hid}", json=fragment, headers=headers), pointer)
    assert conn.execute("SELECT count(*) FROM whk.whk_01_webhooks").fetchone() == (1,)
    assert (
        conn.execute("SELECT w::text FROM whk.whk_01_webhooks w WHERE id = %s", (hid,)).fetchone() == before
    )
    # the bounds themselves are accepted by the API and by the CHECKs alike
    for settings in WEBHOOK_AT_THE_BOUNDS:
        r = await client.put(f"/api/whk/webhooks/{hid}", json=settings, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["rate_limit_per_second"] == settings["rate_limit_per_second"]


@pytest.mark.parametrize("who", ["admin", "consumer"])
async def test_consumer_limits_out_of_range_are_refused_by_the_api(
    client: AsyncTestClient[Any], world: World, who: str
):
    headers = world.admin if who == "admin" else world.a.headers
    path = f"/api/whk/consumers/{world.a.consumer_id}"
    for fragment, pointer in CONSUMER_OUT_OF_RANGE:
        _refused(await client.put(path, json=fragment, headers=headers), pointer)
        if who == "admin":
            new = {"name": "bounded", **fragment}
            _refused(await client.post("/api/whk/consumers", json=new, headers=headers), pointer)
    if who == "admin":
        for limits in CONSUMER_AT_THE_BOUNDS:
            r = await client.put(path, json=limits, headers=headers)
            assert r.status_code == 200, r.text


@pytest.mark.parametrize("who", ["admin", "consumer"])
async def test_alert_settings_out_of_range_are_refused_by_the_api(
    client: AsyncTestClient[Any], world: World, who: str
):
    headers = world.admin if who == "admin" else world.a.headers
    for fragment, pointer in ALERT_OUT_OF_RANGE:
        body = {"name": "bounded", "condition": CONDITION, **fragment}
        _refused(await client.post("/api/whk/monitoring/alerts", json=body, headers=headers), pointer)
    channels = [{"type": "email", "target": "a@b.c"}]
    body = {
        "name": "at the bounds",
        "condition": {**CONDITION, "threshold": 1e12, "window_s": 604_800},
        "throttle_seconds": 86_400,
        "escalation": [{"after_s": 604_800, "channels": channels}, {"after_s": 60, "channels": channels}],
    }
    r = await client.post("/api/whk/monitoring/alerts", json=body, headers=headers)
    assert r.status_code == 201, r.text


# ---------------------------------------------------------------------------------------------- SQL
def _sql_world(conn: psycopg.Connection[Any]) -> dict[str, int]:
    row = conn.execute(
        "INSERT INTO whk.whk_04_assinantes (name) VALUES ('sql-bounds') RETURNING id"
    ).fetchone()
    assert row is not None
    consumer = int(row[0])
    row = conn.execute(
        "INSERT INTO whk.whk_01_webhooks (consumer_id, name, url, event_types) "
        "VALUES (%s, 'h', 'http://127.0.0.1:9/h', '{*}') RETURNING id",
        (consumer,),
    ).fetchone()
    assert row is not None
    hook = int(row[0])
    row = conn.execute(
        "INSERT INTO whk.whk_06_alertas (name, condition) VALUES ('a', %s) RETURNING id",
        (json.dumps(CONDITION),),
    ).fetchone()
    assert row is not None
    return {"consumer": consumer, "webhook": hook, "alert": int(row[0])}


def _json_set(column: str, value: Any) -> str:
    return f"{column} = '{json.dumps(value)}'::jsonb"


SQL_OUT_OF_RANGE: list[tuple[str, str, str]] = [
    # (table, SET clause, constraint named by the violation)
    *[
        ("whk_04_assinantes", f"rate_limit_per_second = {v}", "whk_04_assinantes_rate_limit_per_second_check")
        for v in ("5e-324", "0", "0.0009", "1000001")
    ],
    *[
        ("whk_04_assinantes", f"rate_limit_burst = {v}", "whk_04_assinantes_rate_limit_burst_check")
        for v in ("0", "1000001")
    ],
    *[
        (
            "whk_04_assinantes",
            f"api_rate_limit_per_minute = {v}",
            "whk_04_assinantes_api_rate_limit_per_minute_check",
        )
        for v in ("0", "1000000001")
    ],
    *[
        (
            "whk_04_assinantes",
            f"quota_deliveries_per_day = {v}",
            "whk_04_assinantes_quota_deliveries_per_day_check",
        )
        for v in ("0", "1000000001")
    ],
    *[
        ("whk_01_webhooks", f"rate_limit_per_second = {v}", "whk_01_webhooks_rate_limit_per_second_check")
        for v in ("5e-324", "0", "1000001")
    ],
    *[
        ("whk_01_webhooks", f"rate_limit_burst = {v}", "whk_01_webhooks_rate_limit_burst_check")
        for v in ("0", "1000001")
    ],
    *[
        ("whk_01_webhooks", f"max_in_flight = {v}", "whk_01_webhooks_max_in_flight_check")
        for v in ("0", "1001")
    ],
    *[("whk_01_webhooks", f"batch_size = {v}", "whk_01_webhooks_batch_size_check") for v in ("0", "1001")],
    *[
        ("whk_01_webhooks", f"batch_window_ms = {v}", "whk_01_webhooks_batch_window_ms_check")
        for v in ("-1", "3600001")
    ],
    *[
        ("whk_01_webhooks", f"delay_seconds = {v}", "whk_01_webhooks_delay_seconds_check")
        for v in ("-1", "2592001")
    ],
    *[("whk_01_webhooks", f"timeout_ms = {v}", "whk_01_webhooks_timeout_ms_check") for v in ("99", "120001")],
    *[
        ("whk_01_webhooks", f"ack_timeout_seconds = {v}", "whk_01_webhooks_ack_timeout_seconds_check")
        for v in ("0", "2592001")
    ],
    *[
        ("whk_01_webhooks", f"payload_version = {v}", "whk_01_webhooks_payload_version_check")
        for v in ("0", "1001")
    ],
    *[
        ("whk_01_webhooks", _json_set("retry_policy", v), "whk_01_webhooks_retry_policy_bounds")
        for v in (
            {"schedule_s": [TINY]},
            {"schedule_s": [604_801]},
            {"schedule_s": [1] * 31},
            {"schedule_s": "5"},
            {"schedule_s": ["5"]},
            {"jitter": 1},
            {"jitter": -0.1},
            {"throttle_floor_s": 86_401},
            {"retry_after_cap_factor": 0.5},
            {"retry_after_cap_factor": 101},
            {"retry_blocked": "no"},
            {"schedule": [1]},
            [1],
        )
    ],
    *[
        ("whk_01_webhooks", _json_set("breaker_config", v), "whk_01_webhooks_breaker_config_bounds")
        for v in (
            {"failure_threshold": 0},
            {"failure_threshold": 1001},
            {"failure_threshold": 5.0},
            {"failure_threshold": "5"},
            {"open_s": TINY},
            {"open_s": 86_401},
            {"open_s": 0},
            {"open_max_s": 604_801},
            {"open_seconds": 60},
            {"half_open_probes": 1},
            {"open": 1},
        )
    ],
    *[
        ("whk_06_alertas", f"throttle_seconds = {v}", "whk_06_alertas_throttle_seconds_check")
        for v in ("-1", "86401")
    ],
    *[
        ("whk_06_alertas", _json_set("condition", {**CONDITION, **v}), constraint)
        for v, constraint in (
            ({"threshold": -1e12 - 1}, "whk_06_alertas_threshold_check"),
            ({"threshold": 1e12 + 1}, "whk_06_alertas_threshold_check"),
            ({"threshold": "1"}, "whk_06_alertas_threshold_check"),
            ({"window_s": 59}, "whk_06_alertas_windows_check"),
            ({"window_s": 2_592_001}, "whk_06_alertas_windows_check"),
            ({"webhook_id": 0}, "whk_06_alertas_ids_check"),
        )
    ],
    (
        "whk_06_alertas",
        _json_set("escalation", [{"after_s": -1, "channels": []}]),
        "whk_06_alertas_escalation_steps_check",
    ),
    ("whk_06_alertas", _json_set("escalation", [5]), "whk_06_alertas_escalation_steps_check"),
]
CONFIG_OUT_OF_RANGE: list[tuple[str, Any]] = [
    ("rate_limit.webhook_default", {"per_second": TINY, "burst": None, "max_in_flight": 10}),
    ("rate_limit.webhook_default", {"per_second": 2_000_000}),
    ("rate_limit.webhook_default", {"burst": 0}),
    ("rate_limit.webhook_default", {"max_in_flight": 1001}),
    ("rate_limit.webhook_default", {"per_second": "1"}),
    ("rate_limit.webhook_default", {"rate": 1}),
    ("rate_limit.api_per_minute", 0),
    ("rate_limit.api_per_minute", 1_000_000_001),
    ("rate_limit.api_per_minute", "600"),
    ("retry.policy", {"schedule_s": [0]}),
    ("retry.policy", {"schedule_s": [5], "jitter": 2}),
    ("delivery.breaker", {"failure_threshold": 0}),
    ("delivery.breaker", {"open_s": TINY}),
    ("delivery.breaker", {"open_seconds": 60}),
    ("delivery.auto_disable_after_s", 59),
    ("delivery.auto_disable_after_s", 31_536_001),
    ("delivery.response_body_max_bytes", -1),
    ("delivery.response_body_max_bytes", 1_048_577),
    ("security.rotation_grace_hours", -1),
    ("security.rotation_grace_hours", 721),
    ("security.max_old_keys", -1),
    ("security.max_old_keys", 101),
    ("monitoring.oldest_pending_warn_s", 0),
    ("monitoring.oldest_pending_warn_s", 604_801),
]


def test_out_of_range_values_written_in_sql_violate_a_check(conn: psycopg.Connection[Any]):
    ids = _sql_world(conn)
    key = {
        "whk_04_assinantes": ids["consumer"],
        "whk_01_webhooks": ids["webhook"],
        "whk_06_alertas": ids["alert"],
    }
    for table, assignment, constraint in SQL_OUT_OF_RANGE:
        with pytest.raises(psycopg.errors.CheckViolation) as caught, conn.transaction():
            conn.execute(f"UPDATE whk.{table} SET {assignment} WHERE id = %s", (key[table],))
        assert caught.value.diag.constraint_name == constraint, (table, assignment)
    for setting, value in CONFIG_OUT_OF_RANGE:
        with pytest.raises(psycopg.errors.CheckViolation) as caught, conn.transaction():
            conn.execute(
                "UPDATE whk.whk_05_configuracoes SET value = %s::jsonb WHERE key = %s",
                (json.dumps(value), setting),
            )
        assert caught.value.diag.constraint_name == "whk_05_configuracoes_value_bounds", (setting, value)
        # the DBA reads what is wrong and where the bounds are, not just a constraint name
        assert (caught.value.diag.message_primary or "").startswith(f"whk_05_configuracoes {setting}: ")
        assert "docs/configuration.md" in (caught.value.diag.message_hint or "")
    with pytest.raises(psycopg.errors.CheckViolation) as caught, conn.transaction():
        conn.execute(
            "UPDATE whk.whk_05_configuracoes SET value = '0' WHERE key = 'rate_limit.api_per_minute'"
        )
    assert caught.value.diag.message_primary == (
        "whk_05_configuracoes rate_limit.api_per_minute: rate_limit.api_per_minute must be between 1 and "
        "1000000000, got 0"
    )
    # the shipped defaults are within bounds, and a setting WHK does not know is not checked
    problems = conn.execute(
        "SELECT key, whk.config_value_problem(key, value) FROM whk.whk_05_configuracoes"
        " WHERE whk.config_value_problem(key, value) IS NOT NULL"
    ).fetchall()
    assert problems == []
    conn.execute(
        "INSERT INTO whk.whk_05_configuracoes (key, category, value, description)"
        " VALUES ('delivery.something_new', 'delivery', '-1', 'x')"
    )


def test_the_problem_functions_name_the_member_at_fault(conn: psycopg.Connection[Any]):
    def one(sql: str, *args: Any) -> Any:
        row = conn.execute(sql, args).fetchone()
        assert row is not None
        return row[0]

    assert one("SELECT whk.retry_policy_problem(%s::jsonb)", json.dumps({"schedule_s": [1, 0]})) == (
        "schedule_s[1] must be between 0.001 and 604800, got 0"
    )
    assert one("SELECT whk.retry_policy_problem(%s::jsonb)", json.dumps({"schedule": [1]})).startswith(
        "unknown member schedule"
    )
    assert one("SELECT whk.breaker_config_problem(%s::jsonb)", json.dumps({"failure_threshold": 5.0})) == (
        "failure_threshold must be an integer"
    )
    assert (
        one(
            "SELECT whk.config_value_problem('rate_limit.webhook_default', %s::jsonb)",
            json.dumps({"per_second": None, "burst": 0}),
        )
        == "burst must be between 1 and 1000000, got 0"
    )
    assert one("SELECT whk.retry_policy_problem(NULL)") is None
