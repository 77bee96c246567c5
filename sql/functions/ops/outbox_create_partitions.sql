-- whk.outbox_create_partitions: make sure whk.outbox has one partition per day (or week/month) from the
-- current period up to `ahead` from now, named outbox_pYYYYMMDD after the period's first day. Run it daily
-- (cron, pg_cron, or the dispatcher's maintenance loop); it is idempotent and returns the partitions it
-- created. Rows that landed in outbox_default for a period (partitions created late) are moved into the
-- new partition in the same transaction, keeping their ids, so nothing is lost or duplicated.
-- Creating a partition briefly takes an ACCESS EXCLUSIVE lock on whk.outbox (ERP inserts wait a moment):
-- creating them ahead of time keeps the default partition empty and this instantaneous.
CREATE OR REPLACE FUNCTION whk.outbox_create_partitions(ahead interval DEFAULT '7 days', period text DEFAULT 'day')
RETURNS SETOF text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_step  interval;
    v_from  timestamptz;
    v_to    timestamptz;
    v_name  text;
    v_moved bigint;
BEGIN
    IF period NOT IN ('day', 'week', 'month') THEN
        RAISE EXCEPTION 'invalid partition period %', quote_literal(period)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use day, week or month';
    END IF;
    v_step := ('1 ' || period)::interval;
    -- Periods are aligned in UTC so the partition bounds do not depend on the session time zone.
    v_from := date_trunc(period, now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    WHILE v_from <= now() + ahead LOOP
        v_to := ((v_from AT TIME ZONE 'UTC') + v_step) AT TIME ZONE 'UTC';
        v_name := 'outbox_p' || to_char(v_from AT TIME ZONE 'UTC', 'YYYYMMDD');
        -- Skip periods already covered by any partition (whatever its name or size).
        IF NOT EXISTS (SELECT 1 FROM whk.outbox_partitions p
                        WHERE NOT p.is_default AND p.range_from < v_to AND p.range_to > v_from) THEN
            LOCK TABLE whk.outbox IN ACCESS EXCLUSIVE MODE;
            CREATE TEMP TABLE IF NOT EXISTS whk_outbox_moving (LIKE whk.outbox) ON COMMIT DROP;
            TRUNCATE whk_outbox_moving;
            WITH moved AS (
                DELETE FROM whk.outbox_default WHERE created_at >= v_from AND created_at < v_to RETURNING *
            )
            INSERT INTO whk_outbox_moving SELECT * FROM moved;
            GET DIAGNOSTICS v_moved = ROW_COUNT;
            EXECUTE format('CREATE TABLE whk.%I PARTITION OF whk.outbox FOR VALUES FROM (%L) TO (%L)',
                           v_name, v_from, v_to);
            IF v_moved > 0 THEN
                INSERT INTO whk.outbox OVERRIDING SYSTEM VALUE SELECT * FROM whk_outbox_moving;
            END IF;
            RETURN NEXT v_name;
        END IF;
        v_from := v_to;
    END LOOP;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.outbox_create_partitions(interval, text) FROM PUBLIC;
-- The job worker's `housekeeping` schedule runs it with the dispatcher's role.
GRANT EXECUTE ON FUNCTION whk.outbox_create_partitions(interval, text) TO whk_dispatcher;
COMMENT ON FUNCTION whk.outbox_create_partitions(interval, text) IS
    'Create outbox partitions (day/week/month) up to now() + ahead; moves stray rows out of outbox_default.';
