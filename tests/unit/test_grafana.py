"""docs/grafana: the dashboard JSON and the alert rules use only metrics WHK exports.

The exported names are taken from the exporters themselves: the dispatcher's and the operations
worker's registries after one observation of each kind, and the API's /monitoring/metrics renderer fed
with every gauge."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from api.monitoring.controller import _prometheus
from dispatcher.metrics import DispatcherMetrics
from ops.metrics import OpsMetrics

DOCS = Path(__file__).resolve().parents[2] / "docs" / "grafana"
METRIC = re.compile(r"\bwhk_[a-z0-9_]+")


def sample_names(text: str) -> set[str]:
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def exported() -> set[str]:
    m = DispatcherMetrics()
    m.attempt(1, "delivered", 12.0)
    m.delivered(['{"data": {}, "type": "a.b", "timestamp": "2026-01-01T00:00:00.000000Z"}'], 1.8e9)
    m.round(0.001, 1, 1)
    with m.recording(1):
        pass
    m.breaker_transition(1, "closed", "open")
    names = sample_names(generate_latest(m.registry).decode())
    ops = OpsMetrics()
    ops.notification("slack", "trigger", "sent")
    ops.evaluation(ok=True, changed=1)
    names |= sample_names(generate_latest(ops.registry).decode())
    api: dict[str, Any] = {
        "deliveries_open": {"pending": 1, "in_flight": 0, "awaiting_ack": 0, "parked": 0},
        "dead_letters_24h": 1,
        "oldest_pending_age_s": 3.0,
        "alerts_firing": 0,
        "webhooks": {"active": 1},
        "breakers": {"closed": 1},
        "attempts_5m": [{"status": "delivered", "n": 1, "p50": 1.0, "p95": 1.0, "p99": 1.0}],
        "outbox_pending": 0,
        "oldest_unrouted_age_s": None,
        "oldest_due_delivery_age_s": None,
        "dispatchers_alive": 1,
        "schema_version": 24,
    }
    return names | sample_names(_prometheus(api).decode())


def used_in_dashboard() -> dict[str, set[str]]:
    doc = json.loads((DOCS / "whk-dashboard.json").read_text())
    used: dict[str, set[str]] = {}
    for panel in doc["panels"]:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for t in panel["targets"]:
            used.setdefault(panel["title"], set()).update(METRIC.findall(t["expr"]))
    return used


def used_in_rules() -> dict[str, set[str]]:
    doc = yaml.safe_load((DOCS / "whk-alerts.yml").read_text())
    return {r["alert"]: set(METRIC.findall(r["expr"])) for g in doc["groups"] for r in g["rules"]}


@pytest.mark.parametrize("source", [used_in_dashboard, used_in_rules], ids=["dashboard", "alert rules"])
def test_every_metric_used_is_exported(source: Any) -> None:
    known = exported()
    used = source()
    assert used and all(used.values()), "every panel and rule queries at least one whk_* metric"
    missing = {where: sorted(names - known) for where, names in used.items() if names - known}
    assert missing == {}


def test_the_check_catches_an_unknown_metric() -> None:
    assert "whk_no_such_metric_total" not in exported()
    assert "whk_dispatcher_attempts_total" in exported()


def test_dashboard_panels_have_unique_ids_and_positions() -> None:
    doc = json.loads((DOCS / "whk-dashboard.json").read_text())
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    assert all({"x", "y", "w", "h"} <= set(p["gridPos"]) for p in doc["panels"])
