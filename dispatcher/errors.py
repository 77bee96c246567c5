"""Error tree of the dispatcher.

WhkError (whk.errors)
└── DispatcherError          the dispatcher cannot start or keep running
    └── WebhookConfigError   a webhook's stored delivery settings cannot be used (undecryptable secret,
        │                    malformed headers); its deliveries fail with this reason instead of sending
        └── UnsignedRequestRefused  a request without a signing secret was about to be built: never sent

Network and HTTP failures are never raised: the sender returns them as an ``AttemptResult`` and the
classifier turns them into outcomes.
"""

from __future__ import annotations

from whk.errors import WhkError


class DispatcherError(WhkError):
    """The dispatcher cannot start or keep running."""


class WebhookConfigError(DispatcherError):
    """A webhook's stored delivery settings cannot be used as they are."""


class UnsignedRequestRefused(WebhookConfigError):
    """Nothing goes on the wire without a ``webhook-signature``: the webhook has no usable signing secret."""
