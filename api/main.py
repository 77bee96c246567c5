"""``whk api``: serve the API with uvicorn (the lead's CLI calls ``main(settings)``).

One worker (WHK_API_WORKERS=1): the app runs in this process. More: uvicorn's supervisor binds the socket
once and starts that many worker processes sharing it; each builds its own app and connection pool from
the environment (``_factory``: the same WHK_* variables ``whk api`` read). Everything that must hold across
workers lives in PostgreSQL (per-consumer rate limits, key revocation, audit), so N workers behave as one
API. SIGINT/SIGTERM stop the supervisor, which stops every worker (graceful shutdown, then exit); a worker
that dies later is replaced. A worker that cannot start (wrong schema version, database unreachable)
stops them all and ``main`` returns non-zero, as with one worker.

X-Forwarded-For is interpreted by WHK itself (WHK_API_TRUSTED_PROXIES), so uvicorn's own proxy-header
handling is switched off: otherwise uvicorn would rewrite the client address from the header for any
peer in its ``forwarded_allow_ips`` (127.0.0.1 by default) before WHK sees the request.
"""

from __future__ import annotations

from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from whk.settings import Settings

__all__ = ["main", "uvicorn_config"]


def uvicorn_config(settings: Settings, app: Any = None, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration of ``whk api`` (``app``: default a new app for ``settings``)."""
    if app is None:
        from api.app import create_app

        app = create_app(settings)
    options: dict[str, Any] = {
        "host": settings.api.host,
        "port": settings.api.port,
        "proxy_headers": False,
        "server_header": False,
        "date_header": True,
        "log_level": settings.core.log_level.lower(),
        "lifespan": "on",
        "access_log": settings.core.debug,
        # uvicorn's loggers propagate to the one handler whk.logs installed (JSON or text, scrubbed).
        "log_config": None,
        "timeout_graceful_shutdown": 10,
    }
    return uvicorn.Config(app, **{**options, **overrides})


def main(settings: Settings) -> int:
    """Run the API until SIGINT/SIGTERM; non-zero when it could not start (e.g. wrong schema version)."""
    if settings.api.workers > 1:
        # Workers are separate processes: uvicorn imports the app factory by name in each of them.
        config = uvicorn_config(settings, "api.main:_factory", factory=True, workers=settings.api.workers)
        supervisor = Multiprocess(config, sockets=[config.bind_socket()])
        supervisor.run()
        failed = any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes)
        return STARTUP_FAILURE if failed else 0
    server = uvicorn.Server(uvicorn_config(settings))
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits with 3 when the lifespan start-up fails
        return exc.code if isinstance(exc.code, int) and exc.code else 1
    return 0 if server.started else 1


def _factory() -> object:
    from api.app import create_app
    from whk.logs import configure_logging
    from whk.settings import load_settings

    settings = load_settings()
    configure_logging(settings)  # a worker process is its own composition root
    return create_app(settings)
