-- 0006 partition_period: Partitions sized by retention (whk.partition_period): a year of day partitions made the hot path's cached plans lock 372 outbox partitions per statement; now a table keeps about 35, whatever its retention.
-- Written by `whk db new-migration`: each block below is the text of the named file.
BEGIN;
SELECT whk.migration_begin(6, 'partition_period');
-- Functions call each other in any order; their bodies are checked when first called (and by the drift test).
SET LOCAL check_function_bodies = off;

-- >>> sql/functions/ops/partition_period.sql
-- whk.partition_period: the partition size of a time-partitioned WHK table (whk.partitions), chosen from
-- how long its retention keeps data ('retention.outbox_days', 'retention.delivered_days',
-- 'retention.attempts_days'): a day while it keeps at most 35 days, a week up to 35 weeks, a month beyond.
-- Why the count matters: a statement run through a cached (generic) plan locks every partition of the
-- tables it reads, at every execution, whatever it prunes; the hot path reads the outbox that way (the
-- routing pick and update, the claim's bodies). Measured (immediate drain, 30k events): PostgreSQL spent
-- 599 µs per event beside a year of day partitions of the 365-day default (372 per table) against ~250
-- with one. This keeps each table at about 35 partitions plus the ones made ahead, whatever the
-- retention. The price: retention drops whole weeks or months, so data may stay up to one period past its
-- horizon.
CREATE OR REPLACE FUNCTION whk.partition_period(p_table regclass)
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, whk, pg_temp
AS $$
    SELECT CASE WHEN k.kept <= interval '35 days' THEN 'day'
                WHEN k.kept <= interval '245 days' THEN 'week'
                ELSE 'month' END
    FROM (SELECT now() - whk.retention_horizon(CASE p_table
                                                   WHEN 'whk.outbox'::regclass THEN 'outbox'
                                                   WHEN 'whk.delivery_history'::regclass THEN 'delivered'
                                                   ELSE 'attempts' END) AS kept) k;
$$;
COMMENT ON FUNCTION whk.partition_period(regclass) IS
    'day, week or month: the partition size that keeps a partitioned WHK table near 35 partitions for its retention.';
-- <<< sql/functions/ops/partition_period.sql

-- >>> sql/functions/ops/create_partitions.sql
-- whk.create_partitions: make sure a time-partitioned WHK table (whk.outbox by created_at, the attempt log
-- whk.whk_03_entregas_tentativas by started_at, the delivery history by finished_at: whk.partitions) has
-- partitions from the period of `since` (default: now; the upgrade that partitions a table passes its
-- oldest row's time) up to `ahead` from now, each named <table>_pYYYYMMDD after its first day. `period`
-- (day, week or month) defaults to the table's own (whk.partition_period, from its retention). When the
-- period changes (a retention setting changed), partitions already made are kept and only the parts of a
-- period they do not cover get one, up to the next period boundary: ranges never overlap and the default
-- partition stays empty. The job worker's `housekeeping` schedule runs it hourly for each table; it is
-- idempotent and returns the partitions it created. Rows that landed in the default partition for a range
-- (partitions created late) are moved into the new partition in the same transaction, keeping their ids,
-- so nothing is lost or duplicated. Creating a partition briefly takes an ACCESS EXCLUSIVE lock on the
-- table (inserts wait a moment): creating them ahead of time keeps the default partition empty and this
-- instantaneous.
CREATE OR REPLACE FUNCTION whk.create_partitions(p_table regclass, ahead interval DEFAULT '7 days',
                                                 period text DEFAULT NULL, since timestamptz DEFAULT NULL)
RETURNS SETOF text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_key     text;
    v_default regclass;
    v_step    interval;
    v_from    timestamptz;
    v_to      timestamptz;
    v_name    text;
    v_moved   bigint;
    v_covered timestamptz;
BEGIN
    IF period IS NULL THEN
        period := whk.partition_period(p_table);
    END IF;
    IF period NOT IN ('day', 'week', 'month') THEN
        RAISE EXCEPTION 'invalid partition period %', quote_literal(period)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use day, week or month';
    END IF;
    SELECT p.partition INTO v_default FROM whk.partitions p WHERE p.parent = p_table AND p.is_default;
    IF v_default IS NULL THEN
        RAISE EXCEPTION '% is not a time-partitioned WHK table', p_table
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use whk.outbox, whk.whk_03_entregas_tentativas or whk.delivery_history (see the view whk.partitions)';
    END IF;
    -- The partition key: the table's one range column.
    SELECT a.attname INTO v_key
      FROM pg_catalog.pg_partitioned_table t
      JOIN pg_catalog.pg_attribute a ON a.attrelid = t.partrelid AND a.attnum = t.partattrs[0]
     WHERE t.partrelid = p_table;
    v_step := ('1 ' || period)::interval;
    -- Periods are aligned in UTC so the partition bounds do not depend on the session time zone.
    v_from := date_trunc(period, least(coalesce(since, now()), now()) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    WHILE v_from <= now() + ahead LOOP
        -- Inside a partition already made (of any size): go on from its end.
        SELECT max(p.range_to) INTO v_covered FROM whk.partitions p
         WHERE p.parent = p_table AND NOT p.is_default AND p.range_from <= v_from AND p.range_to > v_from;
        IF v_covered IS NOT NULL THEN
            v_from := v_covered;
            CONTINUE;
        END IF;
        -- Up to the next period boundary, or to the first partition already made before it.
        v_to := (date_trunc(period, v_from AT TIME ZONE 'UTC') + v_step) AT TIME ZONE 'UTC';
        SELECT least(v_to, min(p.range_from)) INTO v_to FROM whk.partitions p
         WHERE p.parent = p_table AND NOT p.is_default AND p.range_from > v_from AND p.range_from < v_to;
        v_name := (SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = p_table)
                  || '_p' || to_char(v_from AT TIME ZONE 'UTC', 'YYYYMMDD');
        EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', p_table);
        EXECUTE format('CREATE TEMP TABLE whk_partition_moving (LIKE %s) ON COMMIT DROP', p_table);
        EXECUTE format('WITH moved AS (DELETE FROM %s WHERE %I >= $1 AND %I < $2 RETURNING *)'
                       ' INSERT INTO whk_partition_moving SELECT * FROM moved', v_default, v_key, v_key)
            USING v_from, v_to;
        GET DIAGNOSTICS v_moved = ROW_COUNT;
        EXECUTE format('CREATE TABLE whk.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                       v_name, p_table, v_from, v_to);
        IF v_moved > 0 THEN
            EXECUTE format('INSERT INTO %s OVERRIDING SYSTEM VALUE SELECT * FROM whk_partition_moving',
                           p_table);
        END IF;
        DROP TABLE whk_partition_moving;
        RETURN NEXT v_name;
        v_from := v_to;
    END LOOP;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.create_partitions(regclass, interval, text, timestamptz) FROM PUBLIC;
-- The job worker's `housekeeping` schedule runs it with the dispatcher's role.
GRANT EXECUTE ON FUNCTION whk.create_partitions(regclass, interval, text, timestamptz) TO whk_dispatcher;
COMMENT ON FUNCTION whk.create_partitions(regclass, interval, text, timestamptz) IS
    'Create partitions (day/week/month) of whk.outbox, the attempt log or the delivery history up to now() + ahead; moves stray rows out of the default partition.';
-- <<< sql/functions/ops/create_partitions.sql

-- >>> sql/functions/ops/outbox_create_partitions.sql
-- whk.outbox_create_partitions: whk.create_partitions for whk.outbox (outbox_pYYYYMMDD), the name DBAs'
-- scripts and docs/capture.md use. period NULL: the outbox's own (whk.partition_period, from its retention).
CREATE OR REPLACE FUNCTION whk.outbox_create_partitions(ahead interval DEFAULT '7 days', period text DEFAULT NULL)
RETURNS SETOF text
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
    SELECT whk.create_partitions('whk.outbox'::regclass, ahead, period);
$$;
REVOKE EXECUTE ON FUNCTION whk.outbox_create_partitions(interval, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION whk.outbox_create_partitions(interval, text) TO whk_dispatcher;
COMMENT ON FUNCTION whk.outbox_create_partitions(interval, text) IS
    'Create outbox partitions (day/week/month; by default the size its retention calls for) up to now() + ahead; moves stray rows out of outbox_default.';
-- <<< sql/functions/ops/outbox_create_partitions.sql

COMMIT;
