"""``whk.testing``: a pytest plugin and helpers for the people who *receive* WHK's webhooks.

Installed with WHK (``pip install whk``) and registered through the ``pytest11`` entry point, so its
fixtures are available in any test suite without an import:

* ``whk_receiver`` — a local receiver (``Receiver``) with its own signing secret: verifies Standard
  Webhooks signatures within the timestamp tolerance, records every request, can play a scenario
  (``[503, 503, 200]``, the development mock endpoints' format);
* ``whk_event_factory`` — valid envelopes for any event type and version of the catalogue
  (``EventFactory``), generated from its JSON Schemas;
* ``whk_sign`` — signs a payload exactly as WHK does (``sign_request``).

Assertions live on ``receiver.received``: ``assert_event``, ``assert_signed_by``, ``assert_in_order``;
waits have deadlines (``wait_for``, ``wait_for_event``, ``wait_until`` and their ``*_async`` forms).
Against a running WHK, ``receiver.connect(base_url, api_key)`` (``connect_webhook``) points a webhook at a
receiver; ``set_mock_scenario``, ``mock_received`` and ``wait_for_mock`` script and read WHK's own
development mocks with the same assertions. See docs/integrators.md.

This package imports only the core (``whk.signing``, ``whk.mockscenario``): never ``api`` or
``dispatcher``, so it works without a WHK server or database.
"""

from whk.mockscenario import Scenario, Step
from whk.testing.events import EventFactory, InvalidEvent
from whk.testing.receiver import Received, ReceivedRequest, Receiver
from whk.testing.remote import (
    ConnectedWebhook,
    connect_webhook,
    disconnect_webhook,
    mock_received,
    set_mock_scenario,
    wait_for_mock,
)
from whk.testing.signer import SignedRequest, sign_request

__all__ = [
    "ConnectedWebhook",
    "EventFactory",
    "InvalidEvent",
    "Received",
    "ReceivedRequest",
    "Receiver",
    "Scenario",
    "SignedRequest",
    "Step",
    "connect_webhook",
    "disconnect_webhook",
    "mock_received",
    "set_mock_scenario",
    "sign_request",
    "wait_for_mock",
]
