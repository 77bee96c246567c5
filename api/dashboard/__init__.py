"""The monitoring dashboard (``/dashboard``): server-rendered pages over the API's own data access.

``dashboard_handlers()`` are the route handlers (pages and the vendored static files),
``template_config()`` the app's Jinja set-up; ``api.app.create_app`` wires both.
"""

from __future__ import annotations

from api.dashboard.web import dashboard_handlers, template_config

__all__ = ["dashboard_handlers", "template_config"]
