-- A dead letter keeps its own copy of its body (whk.delivery_queue.payload), whatever made it dead (the
-- retry schedule ran out in whk.record_outcomes, an ack timed out in whk.expire_acks, a DBA's UPDATE): the
-- outbox partition of its event can then be dropped by retention under it (whk.partition_work no longer
-- counts dead letters), and a retry years later sends the same bytes. The WHEN clause is evaluated in C for
-- each updated row; the function runs only for a row that just died without a copy. Its own plan settings:
-- whk.record_outcomes switches index scans off around its UPDATE, and this lookup needs the outbox's key.
CREATE OR REPLACE FUNCTION whk.dead_letter_body()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
SET enable_indexscan = on
SET enable_bitmapscan = on
AS $$
BEGIN
    SELECT whk.event_envelope(o) INTO NEW.payload
      FROM whk.outbox o
     WHERE o.id = NEW.outbox_id AND o.created_at = NEW.event_created_at;
    RETURN NEW;
END;
$$;
COMMENT ON FUNCTION whk.dead_letter_body() IS
    'Trigger: a delivery that becomes dead without a body copy gets the event''s envelope as its payload.';

CREATE TRIGGER delivery_queue_dead_letter_body
    BEFORE UPDATE OF status ON whk.delivery_queue
    FOR EACH ROW
    WHEN (NEW.status = 'dead' AND OLD.status <> 'dead' AND NEW.payload IS NULL)
    EXECUTE FUNCTION whk.dead_letter_body();
