-- Attempts are logged once per HTTP request (migration 0010): a batch request carrying many deliveries is
-- one attempt row. Each delivery lists the attempts it took part in (attempt_ids, appended by
-- whk.record_outcomes in the same statement that logs the attempt); a batch attempt lists its members
-- (delivery_ids; delivery_id is the lowest member so joins on it keep working).
ALTER TABLE whk.whk_03_entregas
    ADD COLUMN attempt_ids bigint[] NOT NULL DEFAULT '{}';
ALTER TABLE whk.whk_03_entregas_tentativas
    ADD COLUMN delivery_ids bigint[];
COMMENT ON COLUMN whk.whk_03_entregas.attempt_ids IS
    'Attempts (whk_03_entregas_tentativas.id) this delivery took part in, oldest first.';
COMMENT ON COLUMN whk.whk_03_entregas_tentativas.delivery_ids IS
    'Members of a batch request (NULL when the request carried one delivery, delivery_id).';
