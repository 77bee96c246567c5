"""Process-wide objects the resource controllers need besides ``conn`` and ``principal``.

They live on the application state (set by ``api.app.create_app``) and reach handlers as named
dependencies, so handlers never read globals.
"""

from __future__ import annotations

from typing import Any

from litestar.datastructures import State
from litestar.di import Provide

from whk.secretbox import SecretBox
from whk.settings import Settings

__all__ = ["provide_box", "provide_settings", "resource_dependencies"]


def provide_settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


def provide_box(state: State) -> SecretBox:
    box: Any = state.secret_box
    assert isinstance(box, SecretBox)
    return box


def resource_dependencies() -> dict[str, Provide]:
    return {
        "settings": Provide(provide_settings, sync_to_thread=False),
        "box": Provide(provide_box, sync_to_thread=False),
    }
