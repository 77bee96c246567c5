-- 0013 capture_data: the outbox stores only the event's data; the delivered envelope is built by whk.event_envelope.
-- Why: building the Standard Webhooks envelope {"type", "timestamp", "data"} in the ERP's transaction cost
-- ~16-27 us of CPU per captured row (PostgreSQL 15, measured) and ~176 bytes of WAL: the largest cost of
-- capture over the bare outbox trigger (issue 3: capture must cost the ERP <= 10 % more than that trigger).
-- Now capture writes per row what the bare trigger writes (the row's JSON, the key, constants) and every
-- reader builds the body with one deterministic function. Changes:
--   whk.outbox: + data, old_data, changed, occurred_at; - payload (whk.outbox_events shows it per event).
--   Existing rows are converted in place, every partition (default and ranges): each row's rebuilt body
--   is checked to be byte-identical to its stored payload first, so no event's delivered body changes.
--   A row that cannot be rebuilt (not written by WHK) stops the migration with its ids; nothing is changed.
--   Events written from now on carry the transaction's time (created_at) as timestamp, not the statement's.
--   Rewrites every outbox row once (one transaction): drop routed partitions you no longer need first.
-- Readable sources: sql/schema/140_outbox.sql, sql/views/outbox_events.sql, sql/functions/{event_envelope,
-- capture_install,emit,disable_webhook,route_and_take,claim_deliveries}.sql.
BEGIN;
SELECT whk.migration_begin(13, 'capture_data');

ALTER TABLE whk.outbox
    ADD COLUMN data jsonb,
    ADD COLUMN old_data jsonb,
    ADD COLUMN changed text[],
    ADD COLUMN occurred_at timestamptz;

-- ===== functions/event_envelope.sql
-- whk.event_envelope: the body WHK delivers for one outbox event, the Standard Webhooks envelope
-- {"type", "timestamp", "data"}, rebuilt from what the outbox stores (migration 0013). Every reader of an
-- event's body goes through here: routing (validation, filters, ordering-key paths, the taken payload),
-- the claim, whk.emit's strict validation, the API's event history and delivery detail, whk.outbox_events.
--
-- Why the outbox does not store the envelope: it is the same for every row of a statement except the row
-- image, and building it in the ERP's transaction cost ~16-27 us per captured row (measured, PostgreSQL 15)
-- plus ~176 bytes of WAL. Capture stores only the row image(s), like the bare outbox trigger does.
--   captured rows: data = {"op", "table", "new", "old", "changed"} from operation, source_table, data (new
--                  image), old_data (old image), changed (UPDATE only; NULL -> JSON null)
--   EMIT:          data = the stored data as given to whk.emit
--   timestamp:     occurred_at (set only for events written before 0013: their statement time) else
--                  created_at, the transaction's time, in UTC as YYYY-MM-DD"T"HH24:MI:SS.US"Z"
-- Deterministic: the same stored row gives byte-identical text (jsonb's text form is canonical, every input
-- is stored), so retries and replays send the same body and signatures. A row that does not exist (the NULL
-- side of an outer join) gives NULL.
--
-- SQL-standard body (BEGIN ATOMIC): names are resolved when the function is created, so no search_path can
-- redirect them, and without a SET clause the planner inlines it into the caller's query (a function with
-- SET is never inlined; a non-inlined SQL function costs a call per row). STABLE: to_char is.
CREATE OR REPLACE FUNCTION whk.event_envelope(o whk.outbox)
RETURNS jsonb
LANGUAGE sql
STABLE
PARALLEL SAFE
BEGIN ATOMIC
    SELECT CASE WHEN o.event_type IS NOT NULL THEN
        pg_catalog.jsonb_build_object(
            'type', o.event_type,
            'timestamp', pg_catalog.to_char(pg_catalog.timezone('UTC', coalesce(o.occurred_at, o.created_at)),
                                            'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'data', CASE WHEN o.operation = 'EMIT' THEN o.data
                         ELSE pg_catalog.jsonb_build_object('op', o.operation, 'table', o.source_table,
                                                            'new', o.data, 'old', o.old_data,
                                                            'changed', pg_catalog.to_jsonb(o.changed)) END)
    END;
END;
COMMENT ON FUNCTION whk.event_envelope(whk.outbox) IS
    'The delivered body of an outbox event: {"type","timestamp","data"} rebuilt from the stored row (deterministic).';

-- ===== conversion of the rows already in whk.outbox (every partition)
-- The parts of one stored envelope, as the JSON of the new columns (applied to the row with
-- jsonb_populate_record). Temporary: dropped at the end of this file.
CREATE FUNCTION pg_temp.outbox_0013_parts(op text, created timestamptz, payload jsonb)
RETURNS jsonb
LANGUAGE sql
IMMUTABLE
AS $$
    SELECT CASE WHEN op = 'EMIT' THEN jsonb_build_object('data', payload -> 'data')
                ELSE jsonb_build_object(
                         'data', payload #> '{data,new}',
                         'old_data', payload #> '{data,old}',
                         'changed', CASE WHEN jsonb_typeof(payload #> '{data,changed}') = 'array'
                                         THEN payload #> '{data,changed}' END)
           END
           -- The format every WHK writer used; anything else is left for the check to report.
           || jsonb_build_object('occurred_at',
                  CASE WHEN payload ->> 'timestamp' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$'
                       THEN nullif((payload ->> 'timestamp')::timestamptz, created) END);
$$;

DO $convert$
DECLARE
    v_bad bigint;
    v_ids text;
BEGIN
    -- First a read-only check: the body rebuilt from the parts must be byte-identical to the stored one.
    SELECT count(*), string_agg(x.id::text, ', ' ORDER BY x.id) FILTER (WHERE x.n <= 20)
      INTO v_bad, v_ids
      FROM (SELECT o.id, row_number() OVER (ORDER BY o.id) AS n
              FROM whk.outbox o
             WHERE whk.event_envelope(jsonb_populate_record(o, pg_temp.outbox_0013_parts(o.operation, o.created_at,
                                                                                         o.payload)))::text
                   IS DISTINCT FROM o.payload::text) x;
    IF v_bad > 0 THEN
        RAISE EXCEPTION '0013 capture_data: % outbox event(s) have a stored body that cannot be rebuilt from its parts (outbox ids %)',
                        v_bad, v_ids
            USING ERRCODE = 'data_exception',
                  HINT = 'these rows were not written by WHK (capture, whk.emit, whk.disable_webhook write the envelope '
                         '{"type": <event_type>, "timestamp": "YYYY-MM-DDTHH:MI:SS.ffffffZ", "data": ...}): correct '
                         'their payload to that shape, or delete them if they are no longer needed, then migrate again';
    END IF;
    ALTER TABLE whk.outbox ALTER COLUMN payload DROP NOT NULL;
    -- payload NULL in the new row versions: the rewritten table does not carry the old envelopes along.
    UPDATE whk.outbox o
    SET (data, old_data, changed, occurred_at, payload) =
        (SELECT p.data, p.old_data, p.changed, p.occurred_at, NULL::jsonb
         FROM jsonb_populate_record(o, pg_temp.outbox_0013_parts(o.operation, o.created_at, o.payload)) p);
END;
$convert$;
DROP FUNCTION pg_temp.outbox_0013_parts(text, timestamptz, jsonb);
ALTER TABLE whk.outbox DROP COLUMN payload;

COMMENT ON COLUMN whk.outbox.data IS
    'Captured rows: the new row image (INSERT, UPDATE); EMIT: the event''s data. Body: whk.event_envelope.';
COMMENT ON COLUMN whk.outbox.old_data IS 'Captured rows: the old row image (UPDATE, DELETE).';
COMMENT ON COLUMN whk.outbox.changed IS 'Captured UPDATE: the names of the changed columns, sorted.';
COMMENT ON COLUMN whk.outbox.occurred_at IS
    'The envelope timestamp when it is not created_at (events written before migration 0013); else NULL.';

-- ===== views/outbox_events.sql
-- whk.outbox_events: the outbox with each event's delivered body as `payload` (built by
-- whk.event_envelope; since migration 0013 the outbox stores only the event's data). What DBAs and tests
-- read instead of assembling the envelope themselves. Columns are listed, not o.*, so the view is the same
-- whatever the column order of whk.outbox (a fresh install and a migrated database differ there).
CREATE OR REPLACE VIEW whk.outbox_events AS
SELECT o.id, o.event_id, o.event_type, o.event_version, o.event_key, o.source_table, o.operation, o.txid,
       o.deliver_at, o.created_at, o.status, o.routed_at, o.commit_seq, o.valid, o.validation_error,
       o.data, o.old_data, o.changed, o.occurred_at,
       whk.event_envelope(o) AS payload
FROM whk.outbox o;
COMMENT ON VIEW whk.outbox_events IS
    'whk.outbox with the delivered body (Standard Webhooks envelope) of each event as payload.';

-- ===== functions/capture_install.sql
-- whk.capture_install: (re)generate the capture trigger function of one table from whk.capture_config and
-- (re)attach its statement-level triggers. Called by whk.enable_capture and, when a captured event type
-- gets a new major version, by whk.register_event_type.
--
-- Why a generated function per table instead of one generic function: PL/pgSQL caches the plan of static
-- SQL, while a generic function would plan dynamic SQL (EXECUTE) on every ERP statement. The generated
-- function reads only the statement's transition tables (no lookups, no catalog access) and writes every
-- event of the statement with one INSERT ... SELECT. It is SECURITY DEFINER, owned by the owner of schema
-- whk, with search_path pinned to pg_catalog: ERP roles need no privilege on whk.
--
-- Foreseeable ERP values cannot make it fail: rows become JSON with to_jsonb (numeric NaN -> "NaN",
-- infinity timestamps -> "infinity", bytea -> "\x..", any size up to jsonb's 255 MB limit), changes are
-- detected by comparing those JSON values (no dependence on the column types' equality operators), and
-- the key is read from the JSON too. Only a user-supplied `condition` references columns directly; it is
-- checked by whk.enable_capture before anything is generated.
CREATE OR REPLACE FUNCTION whk.capture_install(tbl regclass)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $install$
#variable_conflict use_column
DECLARE
    p_tbl     regclass := capture_install.tbl;
    c         whk.capture_config%ROWTYPE;
    v_table   text;
    v_owner   text;
    v_cols    text := '';
    v_key     text;
    v_alias   text;
    v_body    text;
    v_head    text;
    v_ins     text := 'RETURN NULL';
    v_upd     text := 'RETURN NULL';
    v_del     text := 'RETURN NULL';
    v_filter  text;
    v_op      text;
    v_type    text;
    v_major   integer;
    v_fn      text;
BEGIN
    SELECT * INTO c FROM whk.capture_config AS cc WHERE cc.tbl = p_tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'table % is not captured', p_tbl
            USING ERRCODE = 'undefined_object', HINT = 'call whk.enable_capture first';
    END IF;
    SELECT n.nspname || '.' || r.relname INTO v_table
      FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace WHERE r.oid = p_tbl;
    IF c.condition IS NOT NULL THEN
        v_cols := ', whk_row.*';
    END IF;

    -- The event key, read from the row's JSON (%s = a jsonb expression of the row): one column as text,
    -- several as a JSON array. Reading it from the JSON keeps working (as NULL) if the column is renamed.
    IF cardinality(c.key_columns) = 1 THEN
        v_key := format('(%%s) ->> %L', c.key_columns[1]);
    ELSIF cardinality(c.key_columns) > 1 THEN
        v_key := format('jsonb_build_array(%s)::text',
                        (SELECT string_agg(format('(%%s) -> %L', k), ', ') FROM unnest(c.key_columns) AS k));
    ELSE
        v_key := 'NULL';
    END IF;

    FOREACH v_op IN ARRAY c.operations LOOP
        v_type := c.event_prefix || CASE v_op WHEN 'INSERT' THEN '.created' WHEN 'UPDATE' THEN '.updated'
                                              ELSE '.deleted' END;
        SELECT e.current_major INTO v_major FROM whk.whk_02_eventos e WHERE e.name = v_type;
        -- Only what varies per row is written (migration 0013): the row image(s) and the key, plus constants.
        -- The envelope {"type", "timestamp", "data"} is rebuilt by whk.event_envelope when the event is read,
        -- so an INSERT writes no more per row than the bare outbox trigger (to_jsonb(row), key, constants).
        -- All of it lives inside the one INSERT: each PL/pgSQL expression outside it is set up again in
        -- every ERP transaction (measured).
        v_head := E'INSERT INTO whk.outbox (event_id, event_type, event_version, event_key, source_table, operation, '
                  || CASE v_op WHEN 'INSERT' THEN 'data' WHEN 'DELETE' THEN 'old_data'
                               ELSE 'data, old_data, changed' END || ')'
                  || format(E'\n        SELECT gen_random_uuid(), %L, %s, ', v_type, coalesce(v_major, 1));
        IF v_op IN ('INSERT', 'DELETE') THEN
            -- One row image: data (INSERT) or old_data (DELETE).
            v_alias := CASE v_op WHEN 'INSERT' THEN 'new' ELSE 'old' END;
            v_body := v_head
                || replace(v_key, '%s', v_alias || '.whk_j') || ','
                || format(E'\n               %L, %L, %s.whk_j', v_table, v_op, v_alias)
                -- OFFSET 0 keeps the planner from pulling the sub-select up, which would compute to_jsonb
                -- twice per row (once for the key, once for the image). With a condition the sub-select is
                -- left to be pulled up: the filter then runs before any row is turned into JSON.
                || format(E'\n        FROM (SELECT to_jsonb(whk_row) AS whk_j%s FROM %s AS whk_row%s) AS %s',
                          v_cols, CASE v_op WHEN 'INSERT' THEN 'whk_new' ELSE 'whk_old' END,
                          CASE WHEN c.condition IS NULL THEN ' OFFSET 0' ELSE '' END, v_alias)
                || CASE WHEN c.condition IS NOT NULL THEN
                       format(E'\n        LEFT JOIN (SELECT whk_row.* FROM %s AS whk_row) AS %s ON false',
                              CASE v_op WHEN 'INSERT' THEN 'whk_new' ELSE 'whk_old' END,
                              CASE v_op WHEN 'INSERT' THEN 'old' ELSE 'new' END)
                       || E'\n        WHERE (' || c.condition || ')' ELSE '' END;
            IF v_op = 'INSERT' THEN
                v_ins := v_body;
            ELSE
                v_del := v_body;
            END IF;
        ELSE
            -- Old and new transition rows are paired by position: PostgreSQL appends both images of an
            -- updated row together, so the n-th old row and the n-th new row are the same row (this also
            -- holds when the update changes the primary key). Changes are found by comparing the rows' JSON,
            -- which works for every column type (point, xml, json have no equality operator).
            v_filter := 'whk_c.whk_changed <> ''{}''';
            IF c.columns IS NOT NULL THEN
                v_filter := v_filter || format(' AND whk_c.whk_changed && %L::text[]', c.columns);
            END IF;
            IF c.condition IS NOT NULL THEN
                v_filter := v_filter || E'\n          AND (' || c.condition || ')';
            END IF;
            v_upd := v_head
                || replace(v_key, '%s', 'new.whk_j') || ','
                || format(E'\n               %L, ''UPDATE'', new.whk_j, old.whk_j, whk_c.whk_changed', v_table)
                || format(E'\n        FROM (SELECT row_number() OVER () AS whk_rn, to_jsonb(whk_row) AS whk_j%s FROM whk_new AS whk_row) AS new', v_cols)
                || format(E'\n        JOIN (SELECT row_number() OVER () AS whk_rn, to_jsonb(whk_row) AS whk_j%s FROM whk_old AS whk_row) AS old', v_cols)
                || E'\n          ON old.whk_rn = new.whk_rn'
                || E'\n        CROSS JOIN LATERAL (SELECT ARRAY(SELECT e.key FROM jsonb_each(new.whk_j) AS e'
                || E'\n                                          WHERE e.value IS DISTINCT FROM old.whk_j -> e.key'
                || E'\n                                          ORDER BY e.key) AS whk_changed) AS whk_c'
                || E'\n        WHERE ' || v_filter;
        END IF;
    END LOOP;

    v_fn := format('whk.%I()', c.function_name);
    EXECUTE format($f$
CREATE OR REPLACE FUNCTION %s
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $whk_capture$
#variable_conflict use_column
-- Generated by whk.enable_capture for %s (prefix %s). Do not edit: call whk.enable_capture again.
BEGIN
    IF TG_OP = 'INSERT' THEN
        %s;
    ELSIF TG_OP = 'UPDATE' THEN
        %s;
    ELSE
        %s;
    END IF;
    -- The wake-up of whk.wake_dispatchers, inlined: at most one NOTIFY per statement, only when the INSERT
    -- wrote rows (FOUND) and a live dispatcher is idle (a function call, not a query; date_part is float8,
    -- cheaper than extract's numeric); identical notifications fold per transaction.
    IF FOUND AND pg_sequence_last_value('whk.dispatcher_idle_until'::regclass) > date_part('epoch', now()) THEN
        PERFORM pg_notify('whk_outbox', '');
    END IF;
    RETURN NULL;
END;
$whk_capture$$f$, v_fn, v_table, c.event_prefix, v_ins, v_upd, v_del);
    EXECUTE format('COMMENT ON FUNCTION %s IS %L', v_fn,
                   format('Capture trigger of %s (events %s.*), generated by whk.enable_capture.', v_table, c.event_prefix));

    SELECT pg_get_userbyid(n.nspowner) INTO v_owner FROM pg_namespace n WHERE n.nspname = 'whk';
    IF v_owner <> current_user THEN
        EXECUTE format('ALTER FUNCTION %s OWNER TO %I', v_fn, v_owner);
    END IF;
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', v_fn);

    -- Create the missing triggers of the captured operations, drop the others (quietly: only those that
    -- exist). A trigger already calling this function is left alone: CREATE OR REPLACE FUNCTION kept its
    -- identity, so regenerating for a new event major needs no privilege on the ERP table.
    FOR v_op, v_type IN SELECT o.op, o.trg
                          FROM (VALUES ('INSERT', 'whk_capture_insert'), ('UPDATE', 'whk_capture_update'),
                                       ('DELETE', 'whk_capture_delete')) AS o(op, trg) LOOP
        IF v_op = ANY (c.operations) AND EXISTS (
               SELECT 1 FROM pg_trigger t
                WHERE t.tgrelid = p_tbl AND t.tgname = v_type AND t.tgfoid = v_fn::regprocedure) THEN
            CONTINUE;
        ELSIF v_op = ANY (c.operations) THEN
            EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER %s ON %s REFERENCING %s FOR EACH STATEMENT '
                           'EXECUTE FUNCTION %s',
                           v_type, v_op, p_tbl,
                           CASE v_op WHEN 'INSERT' THEN 'NEW TABLE AS whk_new'
                                     WHEN 'UPDATE' THEN 'OLD TABLE AS whk_old NEW TABLE AS whk_new'
                                     ELSE 'OLD TABLE AS whk_old' END,
                           v_fn);
        ELSIF EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = p_tbl AND t.tgname = v_type) THEN
            EXECUTE format('DROP TRIGGER %I ON %s', v_type, p_tbl);
        END IF;
    END LOOP;
    RETURN c.function_name;
END;
$install$;
REVOKE EXECUTE ON FUNCTION whk.capture_install(regclass) FROM PUBLIC;
COMMENT ON FUNCTION whk.capture_install(regclass) IS
    'Regenerate the capture trigger function and triggers of a table from whk.capture_config.';

-- ===== functions/emit.sql
-- whk.emit: a custom event from any module, written to the outbox in the caller's transaction
-- (rollback = no event). payload is the event's `data`, stored as outbox.data; the delivered body is the
-- Standard Webhooks envelope {"type", "timestamp", "data"} built by whk.event_envelope (timestamp = the
-- transaction's time). The returned uuid becomes the `webhook-id` header.
-- Strict types are validated here, on the envelope of the row just written, exactly as it will be
-- delivered (an invalid payload raises, with a hint, and the raise undoes the row); others are validated
-- by the router, which flags invalid events (outbox.valid / validation_error) instead of dropping them.
-- deliver_at delays delivery (NULL = now). key orders events per entity for ordered webhooks.
CREATE OR REPLACE FUNCTION whk.emit(event_type text, payload jsonb, key text DEFAULT NULL,
                                    deliver_at timestamptz DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_type     text := emit.event_type;
    v_major    integer;
    v_minor    integer;
    v_strict   boolean;
    v_id       uuid := gen_random_uuid();
    v_envelope jsonb;
    v_error    text;
BEGIN
    SELECT e.current_major, e.current_minor, e.strict INTO v_major, v_minor, v_strict
      FROM whk.whk_02_eventos e WHERE e.name = p_type;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown event type %', coalesce(quote_literal(p_type), 'NULL')
            USING ERRCODE = 'undefined_object',
                  HINT = 'register it first: SELECT whk.register_event_type(''' || coalesce(p_type, 'module.thing_happened')
                         || ''', ''{"type": "object"}'', ''what it means'')';
    END IF;
    INSERT INTO whk.outbox AS o (event_id, event_type, event_version, event_key, data, operation, deliver_at, valid)
    VALUES (v_id, p_type, v_major, emit.key, coalesce(emit.payload, '{}'::jsonb), 'EMIT', emit.deliver_at,
            CASE WHEN v_strict THEN true END)
    RETURNING CASE WHEN v_strict THEN whk.event_envelope(o) END INTO v_envelope;
    IF v_strict THEN
        v_error := whk.validate_payload(p_type, v_major, v_envelope);
        IF v_error IS NOT NULL THEN
            RAISE EXCEPTION 'invalid payload for strict event type % (version %.%): %', p_type, v_major, v_minor, v_error
                USING ERRCODE = 'check_violation',
                      DETAIL = v_error,
                      HINT = format('make the payload match the schema (SELECT schema FROM whk.whk_02_eventos_versoes v '
                                    'JOIN whk.whk_02_eventos e ON e.id = v.event_type_id WHERE e.name = %L '
                                    'ORDER BY major DESC, minor DESC LIMIT 1), or publish a compatible schema '
                                    'with whk.register_event_type', p_type);
        END IF;
    END IF;
    PERFORM whk.wake_dispatchers();
    RETURN v_id;
END;
$$;
GRANT EXECUTE ON FUNCTION whk.emit(text, jsonb, text, timestamptz) TO PUBLIC;
COMMENT ON FUNCTION whk.emit(text, jsonb, text, timestamptz) IS
    'Emit a custom event in the caller''s transaction; returns its id (the webhook-id). Strict types are validated.';

-- ===== functions/disable_webhook.sql
-- Disable a webhook (410 Gone, auto-disable after an unbroken failure window, or an operator) and park its
-- unfinished deliveries: parked rows are kept, not lost, and come back with whk.resume_webhook.
-- Emits a `whk.webhook.disabled` event into the outbox (delivered like any other event to webhooks that
-- subscribe to it, and a durable record of who/why/when) and records the reason on the webhook row.
-- p_actor set (the dispatcher: 410, auto-disable) also writes the audit trail (whk.audit_log, created by
-- the API migration; looked up at run time so this function does not depend on it). The API passes no
-- actor: it audits the operator's request itself, in the same transaction.
-- Returns false when the webhook was already disabled (nothing changed, no duplicate event).
CREATE OR REPLACE FUNCTION whk.disable_webhook(p_webhook_id bigint, p_reason text, p_actor text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_hook   record;
    v_before text;
    v_parked integer;
BEGIN
    SELECT w.status INTO v_before FROM whk.whk_01_webhooks w WHERE w.id = p_webhook_id FOR UPDATE;
    UPDATE whk.whk_01_webhooks w
    SET status = 'disabled', disabled_reason = p_reason, disabled_at = clock_timestamp(),
        updated_at = clock_timestamp()
    WHERE w.id = p_webhook_id AND w.status <> 'disabled'
    RETURNING w.id, w.consumer_id, w.name, w.url INTO v_hook;
    IF NOT FOUND THEN
        RETURN false;
    END IF;

    -- In-flight rows finish their attempt; if it fails they return to pending, which a disabled webhook
    -- never claims (whk.claim_deliveries) until whk.resume_webhook.
    UPDATE whk.whk_03_entregas d
    SET status = 'parked', updated_at = clock_timestamp(), next_attempt_at = clock_timestamp()
    WHERE d.webhook_id = p_webhook_id AND d.status = 'pending';
    GET DIAGNOSTICS v_parked = ROW_COUNT;

    -- Written directly (not whk.emit): the type is the platform's own and need not be in the catalog.
    -- Only the data is stored; whk.event_envelope builds the delivered body (timestamp = transaction time).
    INSERT INTO whk.outbox (event_type, event_key, data, operation)
    VALUES ('whk.webhook.disabled', p_webhook_id::text,
            jsonb_build_object('webhook_id', v_hook.id, 'consumer_id', v_hook.consumer_id,
                               'name', v_hook.name, 'url', v_hook.url, 'reason', p_reason,
                               'parked_deliveries', v_parked,
                               'actor', coalesce(p_actor, current_user)),
            'EMIT');
    PERFORM whk.wake_dispatchers();

    IF p_actor IS NOT NULL AND to_regclass('whk.audit_log') IS NOT NULL THEN
        EXECUTE 'INSERT INTO whk.audit_log (actor, consumer_id, action, target_type, target_id, before, after) '
                'VALUES ($1, $2, ''webhook.disabled'', ''webhook'', $3, $4, $5)'
        USING p_actor, v_hook.consumer_id, p_webhook_id::text, jsonb_build_object('status', v_before),
              jsonb_build_object('status', 'disabled', 'disabled_reason', p_reason, 'parked_deliveries', v_parked);
    END IF;
    RETURN true;
END;
$$;

-- ===== functions/route_and_take.sql
-- Route up to p_limit pending outbox events (see whk.route_outbox for the routing rules) and let the
-- calling dispatcher TAKE up to p_take of the new deliveries at once: they are inserted already in flight,
-- leased to p_dispatcher, and returned with their payload. A fresh event for an unconstrained immediate
-- webhook then costs one write of its delivery row instead of an INSERT plus a claim UPDATE (each of those
-- rewrites every index of whk_03_entregas), and it reaches the HTTP client in the same round trip.
--
-- Only deliveries the fair claim would hand out at once are taken, so every rule still holds: the
-- webhook is in immediate mode (one request per delivery) or batch mode (only full batches of batch_size,
-- one request each, under one batch_id) with no delay, and the event is due now; the webhook has no due
-- backlog (fresh events never overtake waiting ones); its breaker is closed; no token bucket applies
-- (webhook, default or consumer) and the consumer has no daily quota; the in-flight cap (in requests) has
-- room; at most p_take requests are taken. The webhook's runtime row is locked FOR UPDATE SKIP LOCKED like the claim does, so a webhook being
-- claimed by another dispatcher right now is simply not taken from (its deliveries stay pending and are
-- claimed normally). Everything else stays pending for whk.claim_deliveries.
--
-- Returns one row per taken delivery, each carrying `routed` (events routed), plus, when nothing was
-- taken, one row with only `routed` set.
CREATE OR REPLACE FUNCTION whk.route_and_take(p_limit integer, p_dispatcher text, p_take integer,
                                              p_lease_s double precision)
RETURNS TABLE (routed integer, delivery_id bigint, webhook_id bigint, event_id uuid, event_type text,
               attempts integer, schedule_offset integer, batch_id uuid, commit_seq bigint, ordering_key text,
               payload text)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
-- Every query here has an index made for it, and its plan is cached for the session: a generic plan made
-- while the tables were small (a fresh install, the first seconds after a truncate or a new partition)
-- kept seq-scanning them as they grew, until an autoanalyze. Measured: routing 1 event went from 1.8 to
-- 2.6 ms as 1,500 rows accumulated. No JIT: a plan that still had to seq-scan would cost ~1e10 with seq
-- scans disabled and be JIT-compiled at every execution.
SET enable_seqscan = off
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    v_now      timestamptz := clock_timestamp();
    v_lease    timestamptz := clock_timestamp() + make_interval(secs => p_lease_s);
    v_ids      bigint[];
    v_created  timestamptz[];
    v_routed   integer;
    v_taken    bigint;
    v_defaults jsonb;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('whk.route_outbox')) THEN
        RETURN QUERY SELECT 0, NULL::bigint, NULL::bigint, NULL::uuid, NULL::text, NULL::integer, NULL::integer,
                            NULL::uuid, NULL::bigint, NULL::text, NULL::text;
        RETURN;
    END IF;

    -- The batch, in id order (within one visibility batch id order is the best commit-order proxy). Kept as
    -- arrays: every later step reads them once (a CTE referenced from a join was re-scanned per row).
    SELECT array_agg(p.id ORDER BY p.id), array_agg(p.created_at ORDER BY p.id) INTO v_ids, v_created
    FROM (SELECT o.id, o.created_at
          FROM whk.outbox o
          WHERE o.status = 'pending'
          ORDER BY o.id
          LIMIT p_limit
          FOR UPDATE SKIP LOCKED) p;
    IF v_ids IS NULL THEN
        RETURN QUERY SELECT 0, NULL::bigint, NULL::bigint, NULL::uuid, NULL::text, NULL::integer, NULL::integer,
                            NULL::uuid, NULL::bigint, NULL::text, NULL::text;
        RETURN;
    END IF;
    -- A configured default token bucket applies to every webhook: then nothing is taken here.
    v_defaults := whk.delivery_config('rate_limit.webhook_default');
    IF v_defaults ->> 'per_second' IS NOT NULL THEN
        p_take := 0;
    END IF;

    RETURN QUERY
    WITH numbered AS MATERIALIZED (
        SELECT u.id, u.created_at, nextval('whk.outbox_commit_seq') AS seq
        FROM unnest(v_ids, v_created) WITH ORDINALITY AS u(id, created_at, n)
        ORDER BY u.n
    ), routed AS (
        UPDATE whk.outbox o
        SET status = 'routed', routed_at = v_now, commit_seq = n.seq,
            valid = CASE WHEN v.checked THEN v.error IS NULL ELSE o.valid END,
            validation_error = CASE WHEN v.checked THEN v.error ELSE o.validation_error END
        FROM numbered n
        JOIN whk.outbox src ON src.id = n.id AND src.created_at = n.created_at
        -- The delivered body, built once per event (OFFSET 0 keeps the sub-select from being pulled up,
        -- which would evaluate the envelope again for validation and for RETURNING).
        CROSS JOIN LATERAL (SELECT whk.event_envelope(src) AS payload OFFSET 0) env
        LEFT JOIN LATERAL (
            -- Downstream validation of non-strict registered types. The version's compiled check
            -- (whk_02_eventos_versoes.check_path) accepts a valid envelope here, in the statement; only what it
            -- does not accept goes through whk.validate_payload, which decides and names the error.
            SELECT true AS checked,
                   CASE WHEN env.payload -> 'type' = to_jsonb(src.event_type)
                             AND jsonb_typeof(env.payload -> 'timestamp') = 'string'
                             AND coalesce((env.payload -> 'data') @@ ver.check_path, false)
                        THEN NULL
                        ELSE whk.validate_payload(src.event_type, src.event_version, env.payload) END AS error
            FROM whk.whk_02_eventos e
            LEFT JOIN LATERAL (SELECT x.check_path
                                 FROM whk.whk_02_eventos_versoes x
                                WHERE x.event_type_id = e.id AND x.major = coalesce(src.event_version, e.current_major)
                                ORDER BY x.minor DESC
                                LIMIT 1) ver ON true
            WHERE e.name = src.event_type AND NOT e.strict AND src.valid IS NULL
            OFFSET 0  -- not pulled up: the verdict is computed once, not once per column that reads it
        ) v ON true
        WHERE o.id = n.id AND o.created_at = n.created_at
        RETURNING o.id, o.created_at, o.event_id, o.event_type, o.event_version, o.event_key, env.payload,
                  o.deliver_at, o.commit_seq
    ), targets AS (
        -- Subscriptions are matched once per (event type, webhook), not per event: a batch holds few types.
        SELECT t.event_type, w.id, w.consumer_id, w.delivery_mode, w.ordering_key_path, w.delay_seconds,
               w.payload_version, w.filter
        FROM (SELECT DISTINCT r.event_type FROM routed r) t
        JOIN whk.whk_01_webhooks w
          ON w.status = 'active' AND w.deleted_at IS NULL AND whk.event_type_matches(w.event_types, t.event_type)
    ), takers AS MATERIALIZED (
        -- Webhooks whose new deliveries may be taken now, and how many requests (in-flight cap room; a batch
        -- in flight is one request). Only webhooks with no due backlog: fresh events must not overtake (or
        -- starve) deliveries already waiting for the fair claim.
        SELECT w.id, w.delivery_mode AS mode, w.batch_size,
               w.max_in_flight - (SELECT CASE WHEN w.delivery_mode = 'batch' THEN count(DISTINCT d.batch_id)
                                              ELSE count(*) END
                                  FROM whk.whk_03_entregas d
                                  WHERE d.webhook_id = w.id AND d.status = 'in_flight') AS room
        FROM whk.whk_01_webhooks w
        JOIN whk.webhook_runtime rt ON rt.webhook_id = w.id
        JOIN whk.whk_04_assinantes a ON a.id = w.consumer_id
        WHERE p_take > 0
          AND w.id IN (SELECT DISTINCT t.id FROM targets t)
          AND w.delivery_mode IN ('immediate', 'batch') AND w.delay_seconds = 0
          AND w.rate_limit_per_second IS NULL
          AND a.rate_limit_per_second IS NULL AND a.quota_deliveries_per_day IS NULL
          AND rt.breaker_state = 'closed'
          AND NOT EXISTS (SELECT 1 FROM whk.whk_03_entregas d
                          WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= v_now)
        FOR UPDATE OF rt SKIP LOCKED
    ), matched AS (
        SELECT r.event_id, r.id AS outbox_id, r.created_at, r.event_type, r.commit_seq, r.payload, w.id AS webhook_id,
               w.consumer_id,
               CASE WHEN w.delivery_mode = 'ordered' THEN
                   coalesce(jsonb_path_query_first(r.payload, w.ordering_key_path, '{}'::jsonb, true) #>> '{}',
                            r.event_key, '')
               END AS ordering_key,
               greatest(v_now, coalesce(r.deliver_at, r.created_at) + make_interval(secs => w.delay_seconds))
                   AS due_at,
               k.room, k.mode, k.batch_size,
               k.id IS NOT NULL AND coalesce(r.deliver_at, r.created_at) <= v_now AS takeable
        FROM routed r
        JOIN targets w
          ON w.event_type = r.event_type
         AND (w.payload_version IS NULL OR w.payload_version = r.event_version)
         AND (w.filter IS NULL OR coalesce(r.payload @@ w.filter, false))
        LEFT JOIN takers k ON k.id = w.id
    ), numbered_requests AS (
        -- Request number per webhook (0-based): one per delivery, or one per batch_size deliveries for a
        -- batch webhook, where only FULL batches are taken (a partial one waits for its window in the claim).
        SELECT m.*, CASE WHEN m.mode = 'batch' THEN (m.n - 1) / m.batch_size ELSE m.n - 1 END AS req
        FROM (SELECT m.*,
                     row_number() OVER (PARTITION BY m.webhook_id, m.takeable ORDER BY m.commit_seq) AS n,
                     count(*) OVER (PARTITION BY m.webhook_id, m.takeable) AS cnt
              FROM matched m) m
    ), ranked AS (
        SELECT x.*,
               x.takeable AND x.req < x.room
               AND (x.mode <> 'batch' OR (x.req + 1) * x.batch_size <= x.cnt) AS within_cap
        FROM numbered_requests x
    ), chosen AS (
        SELECT x.*,
               x.within_cap AND dense_rank() OVER (PARTITION BY x.within_cap ORDER BY x.webhook_id, x.req)
                                <= p_take AS taken
        FROM ranked x
    ), batches AS MATERIALIZED (
        SELECT b.webhook_id, b.req, gen_random_uuid() AS batch_id
        FROM (SELECT DISTINCT c.webhook_id, c.req FROM chosen c WHERE c.taken AND c.mode = 'batch') b
    ), fanned AS (
        INSERT INTO whk.whk_03_entregas (event_id, outbox_id, event_created_at, event_type, webhook_id,
                                         consumer_id, ordering_key, commit_seq, next_attempt_at, status,
                                         lease_until, claimed_by, batch_id)
        SELECT c.event_id, c.outbox_id, c.created_at, c.event_type, c.webhook_id, c.consumer_id, c.ordering_key,
               c.commit_seq, c.due_at,
               CASE WHEN c.taken THEN 'in_flight' ELSE 'pending' END,
               CASE WHEN c.taken THEN v_lease END,
               CASE WHEN c.taken THEN p_dispatcher END,
               b.batch_id
        FROM chosen c
        LEFT JOIN batches b ON b.webhook_id = c.webhook_id AND b.req = c.req AND c.taken
        ORDER BY c.commit_seq, c.webhook_id
        ON CONFLICT (event_id, webhook_id) DO NOTHING
        RETURNING id, webhook_id, event_id, event_type, attempts, schedule_offset, commit_seq, ordering_key,
                  outbox_id, event_created_at, status, batch_id
    ), runtime AS (
        -- Only webhooks without a runtime row: ON CONFLICT on an existing row whose last version is being
        -- written by another transaction (an outcome moving the breaker) waits for it, and while this
        -- statement holds other runtime rows (takers) that wait could close a deadlock cycle.
        INSERT INTO whk.webhook_runtime (webhook_id)
        SELECT DISTINCT f.webhook_id FROM fanned f
        WHERE NOT EXISTS (SELECT 1 FROM whk.webhook_runtime x WHERE x.webhook_id = f.webhook_id)
        ON CONFLICT (webhook_id) DO NOTHING
    ), served AS (
        -- The fairness cursor: a webhook served here counts as served.
        UPDATE whk.webhook_runtime rt
        SET last_claim_at = v_now
        FROM (SELECT DISTINCT f.webhook_id FROM fanned f WHERE f.status = 'in_flight') s
        WHERE rt.webhook_id = s.webhook_id
    ), fired AS (
        -- Firing history in aggregate: one UPDATE per batch, never per row in the ERP transaction.
        UPDATE whk.whk_02_eventos e
        SET fire_count = e.fire_count + c.n, last_fired_at = v_now
        FROM (SELECT r.event_type, count(*) AS n FROM routed r GROUP BY r.event_type) c
        WHERE e.name = c.event_type
    )
    SELECT (SELECT count(*) FROM routed)::integer, f.id, f.webhook_id, f.event_id, f.event_type, f.attempts,
           f.schedule_offset, f.batch_id, f.commit_seq, f.ordering_key, m.payload::text
    FROM fanned f
    JOIN matched m ON m.outbox_id = f.outbox_id AND m.created_at = f.event_created_at AND m.webhook_id = f.webhook_id
    WHERE f.status = 'in_flight'
    ORDER BY f.commit_seq, f.webhook_id;
    GET DIAGNOSTICS v_taken = ROW_COUNT;
    IF v_taken = 0 THEN
        v_routed := cardinality(v_ids);  -- every picked event was routed
        RETURN QUERY SELECT v_routed, NULL::bigint, NULL::bigint, NULL::uuid, NULL::text, NULL::integer,
                            NULL::integer, NULL::uuid, NULL::bigint, NULL::text, NULL::text;
    END IF;
END;
$$;

-- ===== functions/claim_deliveries.sql
-- Claim due deliveries for one dispatcher, fairly across webhooks, honouring every shared limit.
--
-- p_limit is the number of HTTP requests the caller can start now (a batch is one request). Webhooks with
-- due work are visited least-recently-served first; for each one the claim walks ITS OWN due index
-- (webhook_id, next_attempt_at, id) WHERE pending, so one endpoint's backlog of millions never delays
-- another endpoint's fresh event (a global FIFO would). The webhook's runtime row is locked SKIP LOCKED:
-- two dispatchers never claim for the same webhook at the same moment, so token buckets, in-flight caps
-- and half-open probes are exact across processes.
--
-- Per webhook the number of requests is the least of: what is left of p_limit, max_in_flight minus the
-- requests already in flight, the webhook's token bucket, the consumer's token bucket and daily quota,
-- and 1 for a half-open breaker (the probe). An open breaker claims nothing, so its deliveries wait
-- (they are not dead-lettered early).
--
-- Modes: immediate and delayed take due rows in (next_attempt_at, id) order; ordered takes only lane heads
-- (the lowest commit_seq of each key not yet delivered, dead or parked), so a retrying head blocks its own
-- key and nothing else; batch waits until batch_size rows are due or the oldest has waited batch_window_ms,
-- then claims up to batch_size rows under one batch_id.
--
-- Claimed rows become in_flight with a lease; an expired lease is reclaimed by whk.reclaim_expired_leases.
CREATE OR REPLACE FUNCTION whk.claim_deliveries(p_dispatcher text, p_limit integer, p_lease_s double precision)
RETURNS TABLE (delivery_id bigint, webhook_id bigint, event_id uuid, event_type text, attempts integer,
               schedule_offset integer, batch_id uuid, commit_seq bigint, ordering_key text, payload text)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
-- Cached plans stay on their indexes, no JIT: the reason is given once, at whk.route_and_take.
SET enable_seqscan = off
SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    v_now        timestamptz := clock_timestamp();
    v_lease      timestamptz := clock_timestamp() + make_interval(secs => p_lease_s);
    v_left       integer := p_limit;
    v_defaults   jsonb := coalesce(whk.delivery_config('rate_limit.webhook_default'), '{}'::jsonb);
    w            record;
    c            record;
    v_req        integer;
    v_in_flight  integer;
    v_rate       double precision;
    v_burst      double precision;
    v_tokens     double precision;
    v_ctokens    double precision;
    v_ids        bigint[];
    v_requests   integer;
    v_batch      uuid;
    v_due        integer;
    v_oldest     timestamptz;
BEGIN
    IF p_limit <= 0 THEN
        RETURN;
    END IF;

    FOR w IN
        SELECT wh.id, wh.consumer_id, wh.delivery_mode, wh.batch_size, wh.batch_window_ms, wh.max_in_flight,
               wh.rate_limit_per_second, wh.rate_limit_burst,
               r.breaker_state, r.probe_at, r.probe_until, r.tokens, r.tokens_at
        FROM whk.whk_01_webhooks wh
        JOIN whk.webhook_runtime r ON r.webhook_id = wh.id
        WHERE wh.status = 'active' AND wh.deleted_at IS NULL
          AND EXISTS (SELECT 1 FROM whk.whk_03_entregas d
                      WHERE d.webhook_id = wh.id AND d.status = 'pending' AND d.next_attempt_at <= v_now)
        ORDER BY r.last_claim_at NULLS FIRST, wh.id
        FOR UPDATE OF r SKIP LOCKED
    LOOP
        EXIT WHEN v_left <= 0;

        -- Circuit breaker: open = nothing until probe_at, then exactly one probe (half-open).
        v_req := v_left;
        IF w.breaker_state = 'open' THEN
            CONTINUE WHEN w.probe_at > v_now;
            v_req := 1;
        ELSIF w.breaker_state = 'half_open' THEN
            CONTINUE WHEN w.probe_until > v_now;
            v_req := 1;
        END IF;

        -- In-flight cap, counted in requests (a batch in flight is one request).
        SELECT CASE WHEN w.delivery_mode = 'batch' THEN count(DISTINCT d.batch_id) ELSE count(*) END
        INTO v_in_flight
        FROM whk.whk_03_entregas d
        WHERE d.webhook_id = w.id AND d.status = 'in_flight';
        v_req := least(v_req, greatest(w.max_in_flight - v_in_flight, 0));
        CONTINUE WHEN v_req <= 0;

        -- Webhook token bucket (requests per second; burst defaults to one second's worth).
        v_rate := coalesce(w.rate_limit_per_second::double precision,
                           (v_defaults ->> 'per_second')::double precision);
        IF v_rate IS NOT NULL THEN
            v_burst := coalesce(w.rate_limit_burst::double precision, (v_defaults ->> 'burst')::double precision,
                                greatest(1.0, ceil(v_rate)));
            v_tokens := least(v_burst, coalesce(w.tokens, v_burst)
                                       + v_rate * greatest(extract(epoch FROM v_now - w.tokens_at), 0));
            v_req := least(v_req, floor(v_tokens)::integer);
            CONTINUE WHEN v_req <= 0;
        END IF;

        -- Consumer token bucket and daily quota, shared by all of the consumer's webhooks.
        SELECT a.rate_limit_per_second::double precision AS rate, a.rate_limit_burst::double precision AS burst,
               a.quota_deliveries_per_day AS quota, cr.tokens, cr.tokens_at, cr.quota_day, cr.quota_used
        INTO c
        FROM whk.whk_04_assinantes a
        LEFT JOIN whk.consumer_runtime cr ON cr.consumer_id = a.id
        WHERE a.id = w.consumer_id;
        IF c.rate IS NOT NULL OR c.quota IS NOT NULL THEN
            INSERT INTO whk.consumer_runtime (consumer_id) VALUES (w.consumer_id)
            ON CONFLICT (consumer_id) DO NOTHING;
            SELECT cr.tokens, cr.tokens_at, cr.quota_day, cr.quota_used
            INTO c.tokens, c.tokens_at, c.quota_day, c.quota_used
            FROM whk.consumer_runtime cr WHERE cr.consumer_id = w.consumer_id
            FOR UPDATE SKIP LOCKED;
            CONTINUE WHEN NOT FOUND;  -- another dispatcher is charging this consumer right now
            IF c.rate IS NOT NULL THEN
                v_ctokens := least(coalesce(c.burst, greatest(1.0, ceil(c.rate))),
                                   coalesce(c.tokens, coalesce(c.burst, greatest(1.0, ceil(c.rate))))
                                   + c.rate * greatest(extract(epoch FROM v_now - c.tokens_at), 0));
                v_req := least(v_req, floor(v_ctokens)::integer);
            END IF;
            IF c.quota IS NOT NULL THEN
                v_req := least(v_req, greatest(c.quota - CASE WHEN c.quota_day = v_now::date
                                                              THEN c.quota_used ELSE 0 END, 0)::integer);
            END IF;
            CONTINUE WHEN v_req <= 0;
        END IF;

        -- Pick the rows (mode by mode), then claim them with one statement shared by every mode.
        v_batch := NULL;
        IF w.delivery_mode = 'batch' THEN
            SELECT count(*), min(s.next_attempt_at) INTO v_due, v_oldest
            FROM (SELECT d.next_attempt_at FROM whk.whk_03_entregas d
                  WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
                  ORDER BY d.next_attempt_at, d.id
                  LIMIT w.batch_size) s;
            CONTINUE WHEN v_due < w.batch_size
                      AND v_oldest > v_now - make_interval(secs => w.batch_window_ms / 1000.0);
            v_batch := gen_random_uuid();
            SELECT array_agg(p.id) INTO v_ids FROM (
                SELECT d.id FROM whk.whk_03_entregas d
                WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
                ORDER BY d.next_attempt_at, d.id
                LIMIT w.batch_size
                FOR UPDATE SKIP LOCKED) p;
        ELSIF w.delivery_mode = 'ordered' THEN
            SELECT array_agg(p.id) INTO v_ids FROM (
                SELECT d.id FROM whk.whk_03_entregas d
                JOIN (SELECT DISTINCT ON (x.ordering_key) x.id, x.status, x.next_attempt_at
                      FROM whk.whk_03_entregas x
                      WHERE x.webhook_id = w.id AND x.status IN ('pending', 'in_flight', 'awaiting_ack')
                        AND x.ordering_key IS NOT NULL
                      ORDER BY x.ordering_key, x.commit_seq, x.id) h ON h.id = d.id
                WHERE h.status = 'pending' AND h.next_attempt_at <= v_now AND d.status = 'pending'
                ORDER BY h.next_attempt_at, d.id
                LIMIT v_req
                FOR UPDATE OF d SKIP LOCKED) p;
        ELSE
            SELECT array_agg(p.id) INTO v_ids FROM (
                SELECT d.id FROM whk.whk_03_entregas d
                WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= v_now
                ORDER BY d.next_attempt_at, d.id
                LIMIT v_req
                FOR UPDATE SKIP LOCKED) p;
        END IF;
        CONTINUE WHEN v_ids IS NULL;

        RETURN QUERY
        WITH claimed AS (
            UPDATE whk.whk_03_entregas d
            SET status = 'in_flight', lease_until = v_lease, claimed_by = p_dispatcher, batch_id = v_batch,
                updated_at = v_now
            WHERE d.id = ANY (v_ids)
            RETURNING d.*
        )
        SELECT k.id, k.webhook_id, k.event_id, k.event_type, k.attempts, k.schedule_offset, k.batch_id,
               k.commit_seq, k.ordering_key, whk.event_envelope(o)::text
        FROM claimed k
        JOIN whk.outbox o ON o.id = k.outbox_id AND o.created_at = k.event_created_at;
        v_requests := CASE WHEN v_batch IS NOT NULL THEN 1 ELSE cardinality(v_ids) END;
        CONTINUE WHEN v_requests = 0;
        v_left := v_left - v_requests;

        UPDATE whk.webhook_runtime r
        SET last_claim_at = v_now,
            tokens = CASE WHEN v_rate IS NULL THEN NULL ELSE v_tokens - v_requests END,
            tokens_at = v_now,
            breaker_state = CASE WHEN r.breaker_state = 'open' THEN 'half_open' ELSE r.breaker_state END,
            probe_until = CASE WHEN r.breaker_state IN ('open', 'half_open') THEN v_lease ELSE r.probe_until END
        WHERE r.webhook_id = w.id;

        IF c.rate IS NOT NULL OR c.quota IS NOT NULL THEN
            UPDATE whk.consumer_runtime cr
            SET tokens = CASE WHEN c.rate IS NULL THEN NULL ELSE v_ctokens - v_requests END,
                tokens_at = v_now,
                quota_used = CASE WHEN cr.quota_day = v_now::date THEN cr.quota_used ELSE 0 END + v_requests,
                quota_day = v_now::date
            WHERE cr.consumer_id = w.consumer_id;
        END IF;
    END LOOP;
END;
$$;

-- Every captured table's generated trigger function wrote payload: regenerate them all (same tables, same
-- settings, same triggers; only the function bodies change).
SELECT whk.capture_install(c.tbl) FROM whk.capture_config c ORDER BY c.tbl::text;

COMMIT;
