"""``/api/whk/webhooks/{id}/replay`` and ``/api/whk/replays``: send past events to a webhook again."""
