"""Wiring of the dashboard into the Litestar app: Jinja environment, filters and the static files.

Templates and static files are package data of ``api.dashboard`` (pyproject ``package-data``), found
through the package loader, so an installed wheel serves them with no network and no build step.
"""

from __future__ import annotations

from datetime import datetime
from importlib.resources import files
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import ControllerRouterHandler

from api.dashboard.controller import DashboardController

__all__ = ["dashboard_handlers", "environment", "template_config"]

NONE = "\u2013"  # an en dash: no value yet


def num(value: float | int | None) -> str:
    if value is None:
        return NONE
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def pct(value: float | None) -> str:
    return NONE if value is None else f"{value * 100:.1f} %"


def ms(value: float | None) -> str:
    if value is None:
        return NONE
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def age(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d"


def ts(value: datetime | None) -> str:
    return NONE if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("api.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update({"num": num, "pct": pct, "ms": ms, "age": age, "ts": ts})
    return env


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment()))


def dashboard_handlers() -> list[ControllerRouterHandler]:
    static = Path(str(files("api.dashboard") / "static"))
    return [
        DashboardController,
        create_static_files_router(
            path="/dashboard/static",
            directories=[static],
            include_in_schema=False,
            opt={"exclude_from_auth": True},
        ),
    ]
