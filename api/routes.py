"""The route handlers of the API: one line per controller (apires appends its controllers here)."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

from api.apikeys import ApiKeyController
from api.deliveries.controller import DeliveryController
from api.webhooks.controller import WebhookController


def route_handlers() -> list[ControllerRouterHandler]:
    return [
        ApiKeyController,
        WebhookController,
        DeliveryController,
    ]
