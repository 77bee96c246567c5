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
