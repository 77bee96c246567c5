-- The consumer confirms a delivery that answered 202 (awaiting_ack): it becomes delivered.
-- Idempotent: acking an already delivered row returns true and changes nothing. The delivery is finished
-- then: it moves to the history (whk.archive_deliveries).
CREATE OR REPLACE FUNCTION whk.ack_delivery(p_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
BEGIN
    UPDATE whk.delivery_queue d
    SET status = 'delivered', acked_at = clock_timestamp(), ack_deadline = NULL, updated_at = clock_timestamp()
    WHERE d.id = p_id AND d.status = 'awaiting_ack';
    IF FOUND THEN
        PERFORM whk.archive_deliveries(ARRAY[p_id]);
        RETURN true;
    END IF;
    RETURN EXISTS (SELECT 1 FROM whk.delivery_history h WHERE h.id = p_id AND h.status = 'delivered');
END;
$$;
