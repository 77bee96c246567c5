"""SQL CHECKs of alert rules: the numbers inside the jsonb columns have bounds, wrong JSON types are
refused (never cast), and the worker's state columns are bounded too."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

pytestmark = [pytest.mark.db]

OK = {"metric": "failure_rate", "operator": ">", "threshold": 1}


def insert(
    conn: psycopg.Connection[Any], condition: dict[str, Any], escalation: list[Any], **cols: Any
) -> None:
    names = ["name", "condition", "escalation", *cols]
    values = ["t", json.dumps(condition), json.dumps(escalation), *cols.values()]
    conn.execute(
        f"INSERT INTO whk.whk_06_alertas ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(values))})",
        values,
    )


@pytest.mark.parametrize(
    ("condition", "escalation"),
    [
        ({**OK, "window_s": 300}, []),
        (OK, [{"after_s": 3, "channels": [{"channel_id": 1}]}]),
        ({**OK, "threshold": -0.5, "long_window_s": 3600, "short_window_s": 300}, []),
        ({**OK, "window_s": 300, "long_window_s": None, "short_window_s": None}, []),
    ],
)
def test_good_rules_are_accepted(conn, condition, escalation):
    insert(conn, condition, escalation)


@pytest.mark.parametrize(
    ("condition", "escalation", "constraint"),
    [
        ({**OK, "threshold": "1"}, [], "whk_06_alertas_threshold_check"),
        ({"metric": "failure_rate", "operator": ">"}, [], "whk_06_alertas_threshold_check"),
        ({**OK, "threshold": 1e13}, [], "whk_06_alertas_threshold_check"),
        ({**OK, "window_s": -5}, [], "whk_06_alertas_windows_check"),
        ({**OK, "window_s": "300"}, [], "whk_06_alertas_windows_check"),
        ({**OK, "short_window_s": 10}, [], "whk_06_alertas_windows_check"),
        ({**OK, "webhook_id": "abc"}, [], "whk_06_alertas_ids_check"),
        ({**OK, "slo_id": 0}, [], "whk_06_alertas_ids_check"),
        ({**OK, "webhook_id": 1e30}, [], "whk_06_alertas_ids_check"),
        (OK, [{"after_s": -3, "channels": []}], "whk_06_alertas_escalation_steps_check"),
        (OK, [{"after_s": 3}], "whk_06_alertas_escalation_steps_check"),
        (OK, [{"after_s": "3", "channels": []}], "whk_06_alertas_escalation_steps_check"),
    ],
)
def test_bad_numbers_are_refused(conn, condition, escalation, constraint):
    with pytest.raises(psycopg.errors.CheckViolation) as err:
        insert(conn, condition, escalation)
    assert err.value.diag.constraint_name == constraint


@pytest.mark.parametrize(
    ("cols", "constraint"),
    [
        ({"for_s": -1}, "whk_06_alertas_for_s_check"),
        ({"for_s": 86401}, "whk_06_alertas_for_s_check"),
        ({"throttle_seconds": 86401}, "whk_06_alertas_throttle_seconds_check"),
        ({"state": "exploded"}, "whk_06_alertas_state_check"),
    ],
)
def test_state_columns_are_bounded(conn, cols, constraint):
    with pytest.raises(psycopg.errors.CheckViolation) as err:
        insert(conn, OK, [], **cols)
    assert err.value.diag.constraint_name == constraint


def test_slo_objective_has_a_floor_and_a_ceiling(conn):
    for objective in (0.4, 1.0):
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO whk.slos (name, objective) VALUES ('s', %s)", [objective])
    conn.execute("INSERT INTO whk.slos (name, objective) VALUES ('s', 0.999)")
