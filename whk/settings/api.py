"""API settings: listening address, authentication and secrets."""

from __future__ import annotations

from dataclasses import dataclass

from whk.settings._fields import positive, setting


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """API"""

    host: str = setting("WHK_API_HOST", "Address the API listens on.", default="127.0.0.1")
    port: int = setting("WHK_API_PORT", "TCP port of the API.", default=8080, check=positive)
    workers: int = setting(
        "WHK_API_WORKERS", "API worker processes started by `whk api`.", default=1, check=positive
    )
