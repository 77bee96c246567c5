"""``/api/whk/bulk-retries``: progress and cancel of the bulk retries that
``POST /deliveries/bulk-retry`` starts."""
