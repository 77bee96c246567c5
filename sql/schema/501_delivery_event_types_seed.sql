-- The delivery engine's own event type (migration 0005): emitted through whk.emit when a webhook is
-- disabled (410 Gone, unbroken failure window, operator), so consumers and alerting can subscribe to it.
WITH t AS (
    INSERT INTO whk.whk_02_eventos (name, description, category, strict, current_major, current_minor, metadata)
    VALUES ('whk.webhook.disabled', 'A webhook was disabled; its pending deliveries are parked, not lost.',
            'system', false, 1, 0, '{"seed": true}'::jsonb)
    RETURNING id
)
INSERT INTO whk.whk_02_eventos_versoes (event_type_id, major, minor, schema, changelog)
SELECT t.id, 1, 0,
       '{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
         "required": ["webhook_id", "consumer_id", "reason"],
         "properties": {"webhook_id": {"type": "integer"}, "consumer_id": {"type": "integer"},
                        "name": {"type": "string"}, "url": {"type": "string"}, "reason": {"type": "string"},
                        "parked_deliveries": {"type": "integer"}, "actor": {"type": "string"}}}'::jsonb,
       'initial version (seed)'
FROM t;
