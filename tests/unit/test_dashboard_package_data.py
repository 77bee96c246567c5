"""Every template and static file of the dashboard ships in the wheel (pyproject package-data)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "api" / "dashboard"


def test_package_data_covers_every_dashboard_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["api.dashboard"]
    shipped = {p for pattern in patterns for p in PACKAGE.glob(pattern) if p.is_file()}
    needed = {
        p
        for sub in ("templates", "static")
        for p in (PACKAGE / sub).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    } | set(PACKAGE.glob("*.sql"))
    assert needed, "the dashboard has templates and static files"
    assert needed - shipped == set()
