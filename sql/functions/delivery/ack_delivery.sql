-- The consumer confirms a delivery that answered 202 (awaiting_ack): it becomes delivered.
-- Idempotent: acking an already delivered row returns true and changes nothing.
CREATE OR REPLACE FUNCTION whk.ack_delivery(p_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
BEGIN
    UPDATE whk.whk_03_entregas d
    SET status = 'delivered', acked_at = clock_timestamp(), ack_deadline = NULL, updated_at = clock_timestamp()
    WHERE d.id = p_id AND d.status = 'awaiting_ack';
    IF FOUND THEN
        RETURN true;
    END IF;
    RETURN EXISTS (SELECT 1 FROM whk.whk_03_entregas d WHERE d.id = p_id AND d.status = 'delivered');
END;
$$;
