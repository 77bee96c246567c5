"""The ``settings`` dependency for resource controllers (the app keeps ``Settings`` on its state)."""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import Provide

from whk.settings import Settings

__all__ = ["provide_settings", "settings_dependency"]


def provide_settings(state: State) -> Settings:
    settings = state.settings
    assert isinstance(settings, Settings)
    return settings


def settings_dependency() -> dict[str, Provide]:
    return {"settings": Provide(provide_settings, sync_to_thread=False)}
