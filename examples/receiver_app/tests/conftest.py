"""The app under test, served on 127.0.0.1 by the standard library's WSGI server. The WHK fixtures
(whk_receiver, whk_event_factory, whk_sign) come from the plugin that `pip install whk` registers."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orders_app import OrdersApp

APP_SECRET = "whsec_" + "c2VjcmV0IHNlY3JldCBzZWNyZXQgc2VjcmV0IQ=="  # what WHK shows when the webhook is made


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def app() -> OrdersApp:
    return OrdersApp(secret=APP_SECRET)


@pytest.fixture
def app_url(app: OrdersApp) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app.wsgi, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/webhooks/whk"
    finally:
        server.shutdown()
        server.server_close()
