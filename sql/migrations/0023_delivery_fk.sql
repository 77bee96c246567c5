-- 0023 delivery_fk: a delivery row has ONE foreign key, (webhook_id, consumer_id) -> whk_01_webhooks.
-- Why: whk_03_entregas had two, webhook_id -> whk_01_webhooks and consumer_id -> whk_04_assinantes. Each is
-- an after-row trigger that runs `SELECT ... FOR KEY SHARE` on the parent for every inserted delivery, and
-- routing inserts one delivery per (event, webhook) inside the routing lock, where everything is serial.
-- Measured (20,000 rows inserted in one statement, fsync off, 2 cores): 55.6 us per row with the two keys,
-- 43.8 with the composite one, 37.0 with none; `bench deliver`'s batch phase, same-hour A/B, two runs
-- each: 5,309 and 5,350 -> 5,645 and 5,572 events/s, PostgreSQL's CPU 245-247 -> 233-237 us per event.
-- The composite key is also STRICTER: it proves that a delivery's consumer is its webhook's consumer (the
-- API's tenant filters read deliveries by consumer_id), where the two keys only proved that each existed.
-- The consumer still exists through the webhook (whk_01_webhooks.consumer_id references it), so a consumer
-- with deliveries still cannot be deleted.
-- Locks: ALTER TABLE takes SHARE ROW EXCLUSIVE on whk_01_webhooks and whk_03_entregas and validates the new
-- key with one scan of whk_03_entregas (a join on the new unique index). Stop the dispatchers first on a
-- large installation, or expect routing to wait for the scan.
BEGIN;
SELECT whk.migration_begin(23, 'delivery_fk');

-- Refuse, naming the rows, rather than fail on the foreign key with a message a DBA has to decode.
DO $$
DECLARE
    v_count bigint;
    v_ids   text;
BEGIN
    SELECT count(*), array_to_string((array_agg(d.id ORDER BY d.id))[1:10], ', ')
      INTO v_count, v_ids
      FROM whk.whk_03_entregas d
      JOIN whk.whk_01_webhooks w ON w.id = d.webhook_id
     WHERE d.consumer_id <> w.consumer_id;
    IF v_count > 0 THEN
        RAISE EXCEPTION '% deliveries name a consumer that is not their webhook''s (ids %)', v_count, v_ids
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'Set whk.whk_03_entregas.consumer_id to the webhook''s consumer_id for these rows '
                         '(UPDATE ... FROM whk.whk_01_webhooks w WHERE w.id = webhook_id), then run 0023 again.';
    END IF;
END;
$$;

-- The parent key the composite foreign key points at (id alone is already unique: this adds the pair).
ALTER TABLE whk.whk_01_webhooks
    ADD CONSTRAINT whk_01_webhooks_id_consumer_key UNIQUE (id, consumer_id);

ALTER TABLE whk.whk_03_entregas
    DROP CONSTRAINT whk_03_entregas_webhook_id_fkey,
    DROP CONSTRAINT whk_03_entregas_consumer_id_fkey,
    ADD CONSTRAINT whk_03_entregas_webhook_consumer_fkey
        FOREIGN KEY (webhook_id, consumer_id) REFERENCES whk.whk_01_webhooks (id, consumer_id);

COMMIT;
