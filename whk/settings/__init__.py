"""One frozen settings object, built once at start-up from WHK_* variables and passed explicitly.

Sections live in their own modules (``core``, ``dispatcher``, ``api``); ``load_settings`` reads the
environment once, rejects unknown WHK_* names (typos would otherwise be silently ignored) and
cross-checks values that depend on each other.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass

from whk.errors import SettingsError
from whk.settings._fields import describe_default, env_fields, load_section
from whk.settings.api import ApiSettings
from whk.settings.core import DEVELOPMENT_ALLOW_PRIVATE_CIDRS, CoreSettings
from whk.settings.dispatcher import DispatcherSettings

__all__ = ["ApiSettings", "CoreSettings", "DispatcherSettings", "Settings", "load_settings"]

SECTIONS: tuple[type, ...] = (CoreSettings, DispatcherSettings, ApiSettings)


@dataclass(frozen=True, slots=True)
class Settings:
    core: CoreSettings
    dispatcher: DispatcherSettings
    api: ApiSettings

    def with_database_url(self, url: str) -> Settings:
        """The same settings pointing at ``url`` (used once `whk up` has started its server)."""
        return dataclasses.replace(self, core=dataclasses.replace(self.core, database_url=url))


def known_variables() -> dict[str, str]:
    return {f.metadata["env"]: f.metadata["doc"] for s in SECTIONS for f in env_fields(s)}


# Variables read by WHK that are not settings (used by scripts and the test harness).
_AUXILIARY = {"WHK_PG_OS_USER", "WHK_TEST_DATABASE_URL"}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    known = known_variables()
    unknown = sorted(k for k in env if k.startswith("WHK_") and k not in known and k not in _AUXILIARY)
    if unknown:
        raise SettingsError(
            f"unknown setting {unknown[0]}", hint="see docs/configuration.md for the variables WHK reads"
        )
    core = load_section(CoreSettings, env)
    if core.environment == "development" and "WHK_ALLOW_PRIVATE_CIDRS" not in env:
        # The development default lives here, not in a launcher: every process of one deployment (the
        # API, `whk up`'s dispatcher, one started by hand) reads the same environment and agrees.
        nets = tuple(ipaddress.ip_network(n) for n in DEVELOPMENT_ALLOW_PRIVATE_CIDRS)
        core = dataclasses.replace(core, allow_private_cidrs=nets)
    settings = Settings(
        core=core,
        dispatcher=load_section(DispatcherSettings, env),
        api=load_section(ApiSettings, env),
    )
    if settings.core.environment == "production" and settings.core.allow_private_cidrs:
        raise SettingsError(
            "WHK_ALLOW_PRIVATE_CIDRS is set while WHK_ENV=production",
            hint="private address exemptions are for development and tests only",
        )
    settings.dispatcher.validate()
    return settings


def configuration_markdown() -> str:
    """The variables table of docs/configuration.md (a test keeps the file equal to this)."""
    lines: list[str] = []
    for section in SECTIONS:
        lines.append(f"### {section.__doc__.splitlines()[0] if section.__doc__ else section.__name__}")
        lines.append("")
        lines.append("| variable | default | meaning |")
        lines.append("| --- | --- | --- |")
        for f in env_fields(section):
            lines.append(f"| `{f.metadata['env']}` | {describe_default(f)} | {f.metadata['doc']} |")
        lines.append("")
    return "\n".join(lines)
