"""``whk api``: serve the API with uvicorn (the lead's CLI calls ``main(settings)``).

X-Forwarded-For is interpreted by WHK itself (WHK_API_TRUSTED_PROXIES), so uvicorn's own proxy-header
handling is switched off: otherwise uvicorn would rewrite the client address from the header for any
peer in its ``forwarded_allow_ips`` (127.0.0.1 by default) before WHK sees the request.
"""

from __future__ import annotations

import uvicorn

from whk.settings import Settings

__all__ = ["main", "uvicorn_config"]


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    from api.app import create_app

    app = create_app(settings)
    return uvicorn.Config(
        app,
        host=settings.api.host,
        port=settings.api.port,
        proxy_headers=False,
        server_header=False,
        date_header=True,
        log_level=settings.core.log_level.lower(),
        lifespan="on",
        access_log=settings.core.debug,
        timeout_graceful_shutdown=10,
    )


def main(settings: Settings) -> int:
    """Run the API until SIGINT/SIGTERM; non-zero when it could not start (e.g. wrong schema version)."""
    if settings.api.workers > 1:
        # Workers are separate processes: uvicorn imports the app factory by name in each of them.
        uvicorn.run(
            "api.main:_factory",
            factory=True,
            host=settings.api.host,
            port=settings.api.port,
            workers=settings.api.workers,
            proxy_headers=False,
            server_header=False,
            log_level=settings.core.log_level.lower(),
            lifespan="on",
        )
        return 0
    server = uvicorn.Server(uvicorn_config(settings))
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits with 3 when the lifespan start-up fails
        return exc.code if isinstance(exc.code, int) and exc.code else 1
    return 0 if server.started else 1


def _factory() -> object:
    from api.app import create_app
    from whk.settings import load_settings

    return create_app(load_settings())
