"""``/api/whk/exports``: streamed analytics downloads of delivery and event history."""
