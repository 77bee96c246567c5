"""The route handlers of the API: one line per controller (apires appends its controllers here)."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

from api.apikeys import ApiKeyController
from api.bulkretries.controller import BulkRetryController
from api.consumers.controller import ConsumerController
from api.deliveries.controller import DeliveryController
from api.devmock.controller import MockController
from api.events.controller import EventController
from api.exports.controller import ExportController
from api.monitoring.controller import MonitoringController
from api.replays.controller import ReplayController
from api.security.controller import SecurityController
from api.webhooks.controller import WebhookController


def route_handlers() -> list[ControllerRouterHandler]:
    return [
        ApiKeyController,
        WebhookController,
        DeliveryController,
        EventController,
        MonitoringController,
        SecurityController,
        ConsumerController,
        MockController,
        ReplayController,
        BulkRetryController,
        ExportController,
    ]
