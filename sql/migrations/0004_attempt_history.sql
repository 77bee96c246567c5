-- 0004 attempt_history: the attempt log whk_03_entregas_tentativas becomes partitioned by day on started_at (rows moved set-based, ids kept), so retention drops whole expired days instead of deleting rows; one partition mechanism (whk.partitions, whk.create_partitions, whk.drop_partitions) serves the outbox and the attempt log
-- Written by `whk db new-migration`: each block below is the text of the named file.
BEGIN;
SELECT whk.migration_begin(4, 'attempt_history');
-- Functions call each other in any order; their bodies are checked when first called (and by the drift test).
SET LOCAL check_function_bodies = off;

-- The attempt log becomes partitioned by day on started_at (sql/schema/150_whk_03_entregas.sql). Nothing may
-- write it meanwhile: dispatchers of this version refuse to start until the ledger says 4 (the schema guard).
LOCK TABLE whk.whk_03_entregas_tentativas IN ACCESS EXCLUSIVE MODE;
ALTER TABLE whk.whk_03_entregas_tentativas RENAME TO whk_03_entregas_tentativas_old;
ALTER INDEX whk.whk_03_entregas_tentativas_pkey RENAME TO whk_03_entregas_tentativas_old_pkey;
ALTER SEQUENCE whk.whk_03_entregas_tentativas_id_seq RENAME TO whk_03_entregas_tentativas_old_id_seq;
DROP INDEX whk.whk_03_entregas_tentativas_delivery_idx, whk.whk_03_entregas_tentativas_webhook_idx,
           whk.whk_03_entregas_tentativas_started_idx;
-- Generated constraint names must come out as in a fresh install: the old table gives its own up.
ALTER TABLE whk.whk_03_entregas_tentativas_old DROP CONSTRAINT whk_03_entregas_tentativas_attempt_no_check,
    DROP CONSTRAINT whk_03_entregas_tentativas_delivery_id_fkey;
CREATE TABLE whk.whk_03_entregas_tentativas (
    id                  bigint GENERATED ALWAYS AS IDENTITY,
    delivery_id         bigint      NOT NULL REFERENCES whk.whk_03_entregas (id) ON DELETE CASCADE,
    webhook_id          bigint      NOT NULL,
    attempt_no          integer     NOT NULL CHECK (attempt_no > 0),
    batch_id            uuid,
    delivery_ids        bigint[],
    dispatcher_id       text,
    started_at          timestamptz NOT NULL DEFAULT now(),
    duration_ms         double precision,
    request_method      text        NOT NULL,
    request_url         text        NOT NULL,
    request_headers     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    request_body_sha256 text,
    request_body_size   integer,
    response_status     integer,
    response_headers    jsonb,
    response_body       text,
    response_truncated  boolean     NOT NULL DEFAULT false,
    error_class         text,
    error_detail        text,
    outcome             text        NOT NULL,
    PRIMARY KEY (id, started_at)
) PARTITION BY RANGE (started_at);
CREATE TABLE whk.whk_03_entregas_tentativas_default PARTITION OF whk.whk_03_entregas_tentativas DEFAULT;
-- One view of the partitions of both tables (sql/schema/204_outbox_partitions.sql); the API role reads
-- neither view in a fresh install.
CREATE VIEW whk.partitions AS
SELECT i.inhparent::regclass                                                    AS parent,
       p.oid::regclass                                                          AS partition,
       n.nspname || '.' || p.relname                                            AS partition_name,
       (substring(b.bound FROM 'FROM \(''([^'']+)''\)'))::timestamptz          AS range_from,
       (substring(b.bound FROM 'TO \(''([^'']+)''\)'))::timestamptz            AS range_to,
       b.bound = 'DEFAULT'                                                      AS is_default
FROM pg_catalog.pg_inherits i
JOIN pg_catalog.pg_class p ON p.oid = i.inhrelid
JOIN pg_catalog.pg_namespace n ON n.oid = p.relnamespace
CROSS JOIN LATERAL (SELECT pg_catalog.pg_get_expr(p.relpartbound, p.oid) AS bound) AS b
WHERE i.inhparent IN ('whk.outbox'::regclass, 'whk.whk_03_entregas_tentativas'::regclass);
COMMENT ON VIEW whk.partitions IS
    'Partitions of whk.outbox and whk.whk_03_entregas_tentativas and their time ranges (see docs/delivery.md).';
REVOKE ALL ON whk.partitions FROM whk_app;
CREATE OR REPLACE VIEW whk.outbox_partitions AS
SELECT p.partition, p.partition_name, p.range_from, p.range_to, p.is_default
FROM whk.partitions p
WHERE p.parent = 'whk.outbox'::regclass;


-- >>> sql/functions/ops/partition_work.sql
-- whk.partition_work: why a partition of a time-partitioned table cannot be dropped yet, or NULL when
-- nothing needs it.
-- whk.outbox: an event still pending (not routed; outbox_pending_idx), one that failed its schema check
-- (valid = false, when p_keep_invalid; read by a scan of the partition), or a delivery of one of its events
-- that is unfinished or dead (the partial status indexes of whk_03_entregas, filtered on event_created_at).
-- Deliveries have no copy of their payload: the claim rebuilds the body from the outbox row
-- (whk.event_envelope), so a partition is needed as long as any of them may still be sent or retried.
-- The attempt log: an attempt of a delivery that is unfinished or dead: the attempts are what an operator
-- reads before retrying a dead letter. Attempt ids grow with time, so only deliveries (through their
-- partial status indexes) listing an attempt id within the partition's id range are probed in the
-- partition's primary key; dead letters are looked for first, and the first hit ends the search.
-- (Attempt ids are drawn at the flush: a partition's range may overlap its neighbours' a little, and the
-- probe settles it.) An attempt whose outcome was not applied (the lease had passed to another
-- dispatcher) is logged without being listed in its delivery's attempt_ids: it does not keep a day.
CREATE OR REPLACE FUNCTION whk.partition_work(p_table regclass, p_part regclass, p_from timestamptz,
                                              p_to timestamptz, p_keep_invalid boolean)
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    v_why   text;
    v_lo    bigint;
    v_hi    bigint;
    v_state text;
    v_found boolean;
BEGIN
    IF p_table = 'whk.whk_03_entregas_tentativas'::regclass THEN
        EXECUTE format('SELECT min(id), max(id) FROM %s', p_part) INTO v_lo, v_hi;
        IF v_lo IS NULL THEN
            RETURN NULL;
        END IF;
        -- Status tests spelled out as equalities, one per partial status index (a bitmap OR of them).
        FOREACH v_state IN ARRAY ARRAY['d.status = ''dead''',
                                       'd.status = ''pending'' OR d.status = ''in_flight'''
                                       ' OR d.status = ''awaiting_ack'' OR d.status = ''parked'''] LOOP
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM whk.whk_03_entregas d WHERE (%s)'
                           '   AND EXISTS (SELECT 1 FROM unnest(d.attempt_ids) x WHERE x BETWEEN $1 AND $2)'
                           '   AND EXISTS (SELECT 1 FROM %s a WHERE a.id = ANY (d.attempt_ids)))', v_state, p_part)
               INTO v_found USING v_lo, v_hi;
            IF v_found THEN
                RETURN CASE WHEN v_state LIKE '%dead%' THEN 'attempts of dead-lettered deliveries'
                            ELSE 'attempts of unfinished deliveries' END;
            END IF;
        END LOOP;
        RETURN NULL;
    END IF;
    EXECUTE format('SELECT CASE WHEN EXISTS (SELECT 1 FROM %1$s WHERE status = ''pending'') THEN ''pending events'''
                   '            WHEN $1 AND EXISTS (SELECT 1 FROM %1$s WHERE valid IS FALSE) THEN ''invalid events'' END',
                   p_part)
       INTO v_why USING p_keep_invalid;
    IF v_why IS NULL THEN
        SELECT CASE WHEN d.status = 'dead' THEN 'dead-lettered deliveries' ELSE 'unfinished deliveries' END
          INTO v_why
          FROM whk.whk_03_entregas d
         WHERE d.status IN ('pending', 'in_flight', 'awaiting_ack', 'parked', 'dead')
           AND d.event_created_at >= p_from AND d.event_created_at < p_to
         ORDER BY d.status = 'dead'
         LIMIT 1;
    END IF;
    RETURN v_why;
END;
$$;
COMMENT ON FUNCTION whk.partition_work(regclass, regclass, timestamptz, timestamptz, boolean) IS
    'Why a partition is still needed (outbox: pending/invalid events; both: unfinished or dead deliveries), or NULL.';
-- <<< sql/functions/ops/partition_work.sql

-- >>> sql/functions/ops/create_partitions.sql
-- whk.create_partitions: make sure a time-partitioned WHK table (whk.outbox by created_at, the attempt log
-- whk.whk_03_entregas_tentativas by started_at: whk.partitions) has one partition per day (or week/month)
-- from the period of `since` (default: now; the upgrade that partitions a table passes its oldest row's
-- time) up to `ahead` from now, named <table>_pYYYYMMDD after the period's first day. The
-- job worker's `housekeeping` schedule runs it hourly for both tables; it is idempotent and returns the
-- partitions it created. Rows that landed in the default partition for a period (partitions created late)
-- are moved into the new partition in the same transaction, keeping their ids, so nothing is lost or
-- duplicated. Creating a partition briefly takes an ACCESS EXCLUSIVE lock on the table (inserts wait a
-- moment): creating them ahead of time keeps the default partition empty and this instantaneous.
CREATE OR REPLACE FUNCTION whk.create_partitions(p_table regclass, ahead interval DEFAULT '7 days',
                                                 period text DEFAULT 'day', since timestamptz DEFAULT NULL)
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
BEGIN
    IF period IS NULL OR period NOT IN ('day', 'week', 'month') THEN
        RAISE EXCEPTION 'invalid partition period %', quote_literal(period)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use day, week or month';
    END IF;
    SELECT p.partition INTO v_default FROM whk.partitions p WHERE p.parent = p_table AND p.is_default;
    IF v_default IS NULL THEN
        RAISE EXCEPTION '% is not a time-partitioned WHK table', p_table
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use whk.outbox or whk.whk_03_entregas_tentativas (see the view whk.partitions)';
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
        v_to := ((v_from AT TIME ZONE 'UTC') + v_step) AT TIME ZONE 'UTC';
        v_name := (SELECT c.relname FROM pg_catalog.pg_class c WHERE c.oid = p_table)
                  || '_p' || to_char(v_from AT TIME ZONE 'UTC', 'YYYYMMDD');
        -- Skip periods already covered by any partition (whatever its name or size).
        IF NOT EXISTS (SELECT 1 FROM whk.partitions p
                        WHERE p.parent = p_table AND NOT p.is_default
                          AND p.range_from < v_to AND p.range_to > v_from) THEN
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
        END IF;
        v_from := v_to;
    END LOOP;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.create_partitions(regclass, interval, text, timestamptz) FROM PUBLIC;
-- The job worker's `housekeeping` schedule runs it with the dispatcher's role.
GRANT EXECUTE ON FUNCTION whk.create_partitions(regclass, interval, text, timestamptz) TO whk_dispatcher;
COMMENT ON FUNCTION whk.create_partitions(regclass, interval, text, timestamptz) IS
    'Create partitions (day/week/month) of whk.outbox or the attempt log up to now() + ahead; moves stray rows out of the default partition.';
-- <<< sql/functions/ops/create_partitions.sql

-- >>> sql/functions/ops/drop_partitions.sql
-- whk.drop_partitions: retention of a time-partitioned table (whk.partitions). Drops the partitions whose
-- whole period ended more than older_than ago, but only those that hold no work (whk.partition_work): an
-- outbox partition while any of its events is pending or invalid (keep_invalid) or has an unfinished or
-- dead-lettered delivery; an attempt-log partition while it holds an attempt of an unfinished or
-- dead-lettered delivery. Dead letters keep what they need until they are retried or purged. One row per
-- old partition says what happened. The default partition is never dropped. The cost is flat: no row is
-- read or deleted one by one, whatever the partition holds.
--
-- Locks: a partition is first checked without a lock; only one that looks droppable is then locked
-- (ACCESS EXCLUSIVE on it; for the outbox also SHARE on whk_03_entregas, so no delivery of its events
-- appears meanwhile), checked again and dropped (ACCESS EXCLUSIVE on the parent table and its default
-- partition: inserts wait for that moment). Those locks last until the caller's transaction ends, so max_drops bounds the partitions
-- dropped per call: the job worker calls it with max_drops => 1, one short transaction per partition,
-- until nothing more goes. lock_timeout (1 s) bounds how long a waiting lock holds others up behind it; a
-- busy partition is simply kept this time. A transaction reading the partition finishes first.
-- dry_run = true takes no lock and drops nothing: `dropped` then says what a real run would do. `bytes` is
-- the partition's size on disk with its indexes (pg_total_relation_size), what dropping it frees.
CREATE OR REPLACE FUNCTION whk.drop_partitions(p_table regclass,
                                               older_than interval DEFAULT '30 days',
                                               keep_invalid boolean DEFAULT true,
                                               dry_run boolean DEFAULT false,
                                               max_drops integer DEFAULT NULL)
RETURNS TABLE (partition_name text, dropped boolean, reason text, bytes bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
SET lock_timeout = '1s'
AS $$
#variable_conflict use_column
DECLARE
    v_part    regclass;
    v_from    timestamptz;
    v_to      timestamptz;
    v_why     text;
    v_dropped integer := 0;
    v_what    text := CASE WHEN p_table = 'whk.outbox'::regclass THEN 'events' ELSE 'attempts' END;
BEGIN
    IF max_drops IS NOT NULL AND max_drops < 1 THEN
        RAISE EXCEPTION 'max_drops must be at least 1, got %', max_drops
            USING ERRCODE = 'invalid_parameter_value', HINT = 'NULL drops every droppable partition';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM whk.partitions p WHERE p.parent = p_table) THEN
        RAISE EXCEPTION '% is not a time-partitioned WHK table', p_table
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use whk.outbox or whk.whk_03_entregas_tentativas (see the view whk.partitions)';
    END IF;
    FOR v_part, partition_name, v_from, v_to IN
        SELECT p.partition, p.partition_name, p.range_from, p.range_to
          FROM whk.partitions p
         WHERE p.parent = p_table AND NOT p.is_default
         ORDER BY p.range_from
    LOOP
        CONTINUE WHEN v_to > now() - older_than;
        EXIT WHEN v_dropped >= max_drops;
        bytes := pg_total_relation_size(v_part);
        v_why := whk.partition_work(p_table, v_part, v_from, v_to, keep_invalid);
        IF v_why IS NULL AND NOT dry_run THEN
            BEGIN
                EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', v_part);
                IF p_table = 'whk.outbox'::regclass THEN
                    LOCK TABLE whk.whk_03_entregas IN SHARE MODE;
                END IF;
                v_why := whk.partition_work(p_table, v_part, v_from, v_to, keep_invalid);
                IF v_why IS NULL THEN
                    -- Dropped without a DETACH first: detaching the attempt log's partition would turn
                    -- its inherited foreign key into one of its own, creating triggers on whk_03_entregas
                    -- (a lock the hot path's writers conflict with); DROP TABLE leaves that table alone.
                    EXECUTE format('DROP TABLE %s', v_part);
                END IF;
            EXCEPTION WHEN lock_not_available THEN
                v_why := 'busy (lock timeout), try again later';
            END;
        END IF;
        IF v_why IS NULL THEN
            dropped := true;
            reason := format(CASE WHEN dry_run THEN 'would remove %s from %s to %s'
                                  ELSE '%s from %s to %s removed' END, v_what, v_from, v_to);
            v_dropped := v_dropped + 1;
        ELSE
            dropped := false;
            reason := 'kept: ' || v_why;
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.drop_partitions(regclass, interval, boolean, boolean, integer) FROM PUBLIC;
-- The job worker's `retention` schedule runs it.
GRANT EXECUTE ON FUNCTION whk.drop_partitions(regclass, interval, boolean, boolean, integer) TO whk_dispatcher;
COMMENT ON FUNCTION whk.drop_partitions(regclass, interval, boolean, boolean, integer) IS
    'Drop old partitions of the outbox or attempt log that hold no pending/invalid events and nothing an unfinished or dead-lettered delivery needs.';
-- <<< sql/functions/ops/drop_partitions.sql

-- >>> sql/functions/ops/outbox_create_partitions.sql
-- whk.outbox_create_partitions: whk.create_partitions for whk.outbox (outbox_pYYYYMMDD), the name DBAs'
-- scripts and docs/capture.md use.
CREATE OR REPLACE FUNCTION whk.outbox_create_partitions(ahead interval DEFAULT '7 days', period text DEFAULT 'day')
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
    'Create outbox partitions (day/week/month) up to now() + ahead; moves stray rows out of outbox_default.';
-- <<< sql/functions/ops/outbox_create_partitions.sql

-- >>> sql/functions/ops/outbox_drop_partitions.sql
-- whk.outbox_drop_partitions: whk.drop_partitions for whk.outbox, the name DBAs' scripts and
-- docs/capture.md use (same arguments, same answer).
CREATE OR REPLACE FUNCTION whk.outbox_drop_partitions(older_than interval DEFAULT '30 days',
                                                      keep_invalid boolean DEFAULT true,
                                                      dry_run boolean DEFAULT false,
                                                      max_drops integer DEFAULT NULL)
RETURNS TABLE (partition_name text, dropped boolean, reason text, bytes bigint)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
    SELECT * FROM whk.drop_partitions('whk.outbox'::regclass, older_than, keep_invalid, dry_run, max_drops);
$$;
REVOKE EXECUTE ON FUNCTION whk.outbox_drop_partitions(interval, boolean, boolean, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION whk.outbox_drop_partitions(interval, boolean, boolean, integer) TO whk_dispatcher;
COMMENT ON FUNCTION whk.outbox_drop_partitions(interval, boolean, boolean, integer) IS
    'Drop old outbox partitions that hold no pending/invalid events and no unfinished or dead-lettered deliveries.';
-- <<< sql/functions/ops/outbox_drop_partitions.sql

-- >>> sql/functions/ops/retention_plan.sql
-- whk.retention_plan: what a retention run would remove now, without removing anything (`whk db retention
-- --dry-run`). One row per old partition of the outbox and of the attempt log (from whk.drop_partitions
-- in dry-run mode: its exact size on disk, and whether it would be dropped or why it is kept) and one row
-- per table retained by batched deletes (whk_03_entregas, audit_log) with the planner's estimate
-- of the rows and the bytes they take (the table's size with indexes per live row): counting exactly
-- would read the very rows retention exists to avoid reading. SECURITY DEFINER so the worker's and the
-- read-only role may see the audit trail's numbers without reading the audit trail.
CREATE OR REPLACE FUNCTION whk.retention_plan()
RETURNS TABLE (kind text, item text, horizon timestamptz, action text, est_rows bigint, bytes bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_keep_invalid constant boolean := true;
    r record;
    v_q text;
    v_plan json;
    v_per_row double precision;
BEGIN
    FOR r IN SELECT k.kind, whk.retention_horizon(k.kind) AS horizon, d.*
               FROM (VALUES ('outbox', 'whk.outbox'::regclass),
                            ('attempts', 'whk.whk_03_entregas_tentativas'::regclass)) AS k(kind, tbl)
               CROSS JOIN LATERAL whk.drop_partitions(k.tbl, now() - whk.retention_horizon(k.kind),
                                                      v_keep_invalid, dry_run => true) AS d
    LOOP
        kind := r.kind;
        horizon := r.horizon;
        item := r.partition_name;
        action := CASE WHEN r.dropped THEN 'drop partition' ELSE r.reason END;
        est_rows := NULL;
        bytes := r.bytes;
        RETURN NEXT;
    END LOOP;
    FOR kind, item, horizon, v_q IN
        SELECT k, t, whk.retention_horizon(k),
               format(q, whk.retention_horizon(k)) AS q
          FROM (VALUES
                ('delivered', 'whk.whk_03_entregas',
                 'SELECT 1 FROM whk.whk_03_entregas WHERE status IN (''delivered'', ''cancelled'', ''superseded'') AND updated_at < %L'),
                ('audit', 'whk.audit_log',
                 'SELECT 1 FROM whk.audit_log WHERE occurred_at < %L')) AS v(k, t, q)
    LOOP
        EXECUTE 'EXPLAIN (FORMAT JSON) ' || v_q INTO v_plan;
        est_rows := ceil((v_plan -> 0 -> 'Plan' ->> 'Plan Rows')::double precision);
        -- A table never analysed has reltuples -1: count it (only small, fresh tables are never analysed).
        SELECT CASE WHEN c.reltuples > 0 THEN pg_total_relation_size(c.oid) / c.reltuples::double precision END
          INTO v_per_row
          FROM pg_catalog.pg_class c WHERE c.oid = item::regclass;
        IF v_per_row IS NULL THEN
            EXECUTE format('SELECT pg_total_relation_size(%L::regclass)::double precision / greatest(count(*), 1)'
                           ' FROM %s', item, item) INTO v_per_row;
        END IF;
        action := 'batched delete';
        bytes := round(est_rows * coalesce(v_per_row, 0));
        RETURN NEXT;
    END LOOP;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.retention_plan() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION whk.retention_plan() TO whk_dispatcher, whk_readonly;
COMMENT ON FUNCTION whk.retention_plan() IS
    'Dry run of retention: old outbox and attempt-log partitions with their sizes, estimated rows/bytes of the batched deletes.';
-- <<< sql/functions/ops/retention_plan.sql


-- Replaced by whk.partition_work and by dropping attempt-log partitions (whk.drop_partitions).
DROP FUNCTION whk.outbox_partition_work(regclass, timestamptz, timestamptz, boolean);
DROP FUNCTION whk.retention_delete_attempts(integer);
-- A partition for every day from the oldest attempt to today (the housekeeping schedule makes the coming
-- ones), then every row, ids kept, in one statement straight into its day's partition; the identity
-- continues where the old one stopped.
SELECT whk.create_partitions('whk.whk_03_entregas_tentativas', '0 days', 'day', o.oldest)
FROM (SELECT min(started_at) AS oldest FROM whk.whk_03_entregas_tentativas_old) o
WHERE o.oldest IS NOT NULL;
INSERT INTO whk.whk_03_entregas_tentativas OVERRIDING SYSTEM VALUE SELECT * FROM whk.whk_03_entregas_tentativas_old;
SELECT setval('whk.whk_03_entregas_tentativas_id_seq', s.last_value, s.is_called)
FROM whk.whk_03_entregas_tentativas_old_id_seq s;
DROP TABLE whk.whk_03_entregas_tentativas_old;
CREATE INDEX whk_03_entregas_tentativas_delivery_idx ON whk.whk_03_entregas_tentativas (delivery_id, attempt_no);
CREATE INDEX whk_03_entregas_tentativas_webhook_idx ON whk.whk_03_entregas_tentativas (webhook_id, id DESC);
CREATE INDEX whk_03_entregas_tentativas_started_idx ON whk.whk_03_entregas_tentativas (started_at);
COMMENT ON TABLE whk.whk_03_entregas_tentativas IS 'Attempt log: full request/response of every delivery attempt.';
COMMENT ON COLUMN whk.whk_03_entregas_tentativas.delivery_ids IS
    'Members of a batch request (NULL when the request carried one delivery, delivery_id).';
-- The setting's description says what it does now. A release's own text, not an operator's change of
-- configuration: the audit trigger is off for this one statement.
ALTER TABLE whk.whk_05_configuracoes DISABLE TRIGGER whk_05_configuracoes_audit;
UPDATE whk.whk_05_configuracoes
   SET description = 'Attempt-log partitions whose whole day ended longer ago are dropped (unless dead or unfinished deliveries need them).'
 WHERE key = 'retention.attempts_days';
ALTER TABLE whk.whk_05_configuracoes ENABLE TRIGGER whk_05_configuracoes_audit;

COMMIT;
