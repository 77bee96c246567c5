-- whk.explain: what one ERP statement would make WHK send, without sending anything. The statement runs
-- inside a subtransaction (a BEGIN ... EXCEPTION block) that always ends by raising, so everything it did
-- is rolled back: ERP rows, outbox rows, NOTIFYs, queued jobs. Before the rollback the outbox rows its
-- capture triggers (and bindings calling whk.emit) wrote are kept in a variable; deferred triggers are made
-- to fire first (SET CONSTRAINTS ALL IMMEDIATE, undone by the rollback too) so events written at commit
-- are seen. Then every event is matched against every webhook with routing's own rules
-- (whk.event_type_matches, whk.route_target_open, whk.route_payload_matches), one row per (event, webhook):
--   routed   a delivery would be created (false: `reason` says which rule excludes it)
--   reason   why not routed, or why a routed delivery would wait or go out otherwise (parked: its body
--            cannot be rendered for the webhook's pinned major; paused, suspended consumer, waiting for a
--            signing secret, quarantined, delayed (and supersedable), the consumer's quiet hours, batched);
--            NULL = sent at once.
--            Limits the claim applies when sending (rate limits, the breaker, the in-flight cap) are not
--            evaluated: they depend on the moment, not on the event.
--   method, url, headers, body: the request of a routed delivery (the body rendered for a pinned major;
--            headers: webhook-id, webhook-timestamp
--            and the webhook's own headers; Content-Type, User-Agent and the outbound auth header, whose
--            credential is encrypted, are added by whoever sends it)
--   signature always NULL here: signing needs the webhook's secret, encrypted with a key only the
--            application holds (WHK_SECRET_KEYS). `whk explain "..."` (the CLI) fills it, building the
--            request with the dispatcher's own code.
-- An event no webhook exists for gives one row with webhook_id NULL.
--
-- Refused with a HINT, before anything runs: anything but ONE INSERT, UPDATE, DELETE or MERGE (DDL,
-- transaction control, utility commands, several statements), and a statement that reads or writes a
-- table, view or function of schema whk (directly, through a view, a rule or a sub-query). How: the
-- statement is planned (EXPLAIN (VERBOSE, FORMAT JSON), which parses but does not execute) through a
-- cursor, which PostgreSQL refuses to open on more than one statement, so `UPDATE ...; DROP ...` never
-- reaches execution; EXPLAIN accepts no DDL or transaction control; every plan must be a ModifyTable; every
-- relation or set-returning function scanned must be outside schema whk; and no whk function may be
-- called (the VERBOSE plan names functions of schemas not on the search_path, and the statement is
-- planned and run with whk removed from it; a string constant that looks like `whk.f(` is refused too).
-- What functions the statement calls do inside is not inspected: it runs, and is rolled back.
--
-- Not undone by the rollback (PostgreSQL does not roll these back): sequence values (ERP identity columns,
-- the outbox id: gaps are expected), session advisory locks and work done outside the database (dblink)
-- by functions the statement calls.
--
-- Runs with the caller's rights (no SECURITY DEFINER): the caller needs the privileges the statement needs
-- and read access to WHK's tables, i.e. a DBA. No SET search_path clause: the statement is the caller's and
-- resolves its names through the caller's search_path (minus whk); every name here is schema-qualified.
CREATE OR REPLACE FUNCTION whk.explain(statement text)
RETURNS TABLE (event_id uuid, event_type text, event_version integer, event_key text, webhook_id bigint,
               webhook_name text, consumer_id bigint, routed boolean, reason text, method text, url text,
               headers jsonb, body text, signature text)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_path   text := pg_catalog.current_setting('search_path');
    v_plan   jsonb;
    v_row    record;
    v_bad    text;
    v_before bigint[];
    v_events jsonb;  -- the captured outbox rows (a whk.outbox[] variable: pglast cannot check it)
    v_ts     bigint := pg_catalog.floor(extract(epoch FROM pg_catalog.clock_timestamp()));
    c_hint   CONSTANT text := 'whk.explain runs ONE INSERT, UPDATE, DELETE or MERGE on ERP tables, e.g. '
                              'SELECT * FROM whk.explain($q$UPDATE erp.orders SET status = ''paid'' WHERE id = 42$q$)';
BEGIN
    IF statement IS NULL OR pg_catalog.btrim(statement) = '' THEN
        RAISE EXCEPTION 'whk.explain needs a statement' USING ERRCODE = 'invalid_parameter_value', HINT = c_hint;
    END IF;
    -- Plan and run without whk on the search_path: whk objects must be named, and then they are refused.
    PERFORM pg_catalog.set_config('search_path', coalesce((
        SELECT pg_catalog.string_agg(pg_catalog.quote_ident(s), ', ' ORDER BY n)
        FROM pg_catalog.unnest(pg_catalog.current_schemas(false)) WITH ORDINALITY AS c(s, n)
        WHERE s <> 'whk'), ''), true);

    BEGIN
        FOR v_row IN EXECUTE E'EXPLAIN (VERBOSE, FORMAT JSON)\n' || statement LOOP
            v_plan := v_row."QUERY PLAN";
        END LOOP;
    EXCEPTION
        WHEN syntax_error OR invalid_cursor_definition THEN
            RAISE EXCEPTION 'whk.explain refuses this statement: %', SQLERRM
                USING ERRCODE = 'feature_not_supported', HINT = c_hint;
    END;
    SELECT pg_catalog.string_agg(DISTINCT p -> 'Plan' ->> 'Node Type', ', ') INTO v_bad
      FROM pg_catalog.jsonb_array_elements(v_plan) AS p
     WHERE p -> 'Plan' ->> 'Node Type' IS DISTINCT FROM 'ModifyTable';
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'whk.explain refuses a statement that is not an INSERT, UPDATE, DELETE or MERGE (plan: %)', v_bad
            USING ERRCODE = 'feature_not_supported', HINT = c_hint;
    END IF;
    SELECT pg_catalog.string_agg(DISTINCT coalesce(n ->> 'Relation Name', n ->> 'Function Name'), ', ') INTO v_bad
      FROM pg_catalog.jsonb_path_query(v_plan, 'lax $.**') AS n
     WHERE pg_catalog.jsonb_typeof(n) = 'object' AND n ->> 'Schema' = 'whk';
    IF v_bad IS NULL AND v_plan::text ~ '\mwhk\.[a-z_0-9]+\(' THEN
        v_bad := pg_catalog.substring(v_plan::text, '\m(whk\.[a-z_0-9]+)\(');
    END IF;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'whk.explain refuses a statement that touches WHK''s own schema (%)', v_bad
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'explain a statement on ERP tables; WHK''s tables and functions change through its SQL '
                         'functions and API, not through whk.explain';
    END IF;

    -- Outbox rows of this transaction are told apart by txid (the top-level transaction, also inside a
    -- subtransaction) and created_at (the transaction's start, which also prunes partitions); rows the
    -- caller's transaction wrote before this call are remembered and left out.
    v_before := ARRAY(SELECT o.id FROM whk.outbox o
                      WHERE o.txid = pg_catalog.pg_current_xact_id_if_assigned() AND o.created_at = pg_catalog.now());
    BEGIN
        EXECUTE statement;
        SET CONSTRAINTS ALL IMMEDIATE;
        SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(o) ORDER BY o.id) INTO v_events
          FROM whk.outbox o
         WHERE o.txid = pg_catalog.pg_current_xact_id() AND o.created_at = pg_catalog.now()
           AND o.id <> ALL (v_before);
        RAISE EXCEPTION 'whk.explain rolls back' USING ERRCODE = 'WHKRB';
    EXCEPTION
        WHEN SQLSTATE 'WHKRB' THEN
            NULL;  -- the subtransaction, and everything the statement did, is gone; v_events remains
    END;
    PERFORM pg_catalog.set_config('search_path', v_path, true);

    RETURN QUERY
    SELECT e.event_id, e.event_type, e.event_version, e.event_key, w.id, w.name, w.consumer_id,
           m.miss IS NULL,
           coalesce(m.miss, CASE
               WHEN x.problem IS NOT NULL THEN pg_catalog.format('parked: %s', x.problem)
               WHEN w.status = 'paused' THEN 'held: the webhook is paused (sent once it is resumed)'
               WHEN a.status = 'suspended' THEN 'held: the consumer is suspended (sent once it is active again)'
               WHEN w.needs_secret_since IS NOT NULL THEN 'held: the webhook waits for a signing secret'
               WHEN w.quarantined_at IS NOT NULL
                   THEN pg_catalog.format('held: the webhook is quarantined (%s): %s', w.quarantine_stage,
                                          w.quarantine_reason)
               WHEN w.delay_seconds > 0 OR e.deliver_at > pg_catalog.clock_timestamp()
                   THEN pg_catalog.format('delayed: due at %s%s', GREATEST(pg_catalog.clock_timestamp(),
                            coalesce(e.deliver_at, e.created_at) + pg_catalog.make_interval(secs => w.delay_seconds)),
                            CASE WHEN w.supersede_by_key
                                 THEN ' (a newer event of the same key before then supersedes it)' END)
               WHEN whk.quiet_hold_until(a.quiet_hours, w.urgent, pg_catalog.clock_timestamp()) IS NOT NULL
                   THEN pg_catalog.format('held: the consumer''s quiet hours, until %s',
                                          whk.quiet_hold_until(a.quiet_hours, w.urgent, pg_catalog.clock_timestamp()))
               WHEN w.delivery_mode = 'batch'
                   THEN pg_catalog.format('batched: sent in a JSON array of up to %s events (window %s ms), '
                                          'webhook-id batch_<id>', w.batch_size, w.batch_window_ms)
           END),
           CASE WHEN m.miss IS NULL THEN w.http_method END,
           CASE WHEN m.miss IS NULL THEN w.url END,
           CASE WHEN m.miss IS NULL THEN
               w.headers || pg_catalog.jsonb_build_object(
                   'webhook-id', 'msg_' || pg_catalog.replace(e.event_id::text, '-', ''),
                   'webhook-timestamp', v_ts::text)
           END,
           CASE WHEN m.miss IS NULL AND x.problem IS NULL THEN coalesce(x.body, e.envelope)::text END,
           NULL::text
    FROM (SELECT (r.o).*, whk.event_envelope(r.o) AS envelope, r.n
          FROM (SELECT pg_catalog.jsonb_populate_record(NULL::whk.outbox, j.value) AS o, j.n
                FROM pg_catalog.jsonb_array_elements(v_events) WITH ORDINALITY AS j(value, n)) r) e
    LEFT JOIN (whk.whk_01_webhooks w JOIN whk.whk_04_assinantes a ON a.id = w.consumer_id)
           ON w.deleted_at IS NULL
    -- The body a pinned webhook would get (rendered to its major), as routing renders it.
    LEFT JOIN LATERAL (SELECT g.body, g.problem
                       FROM whk.render_event(e.envelope, e.event_type, e.event_version, w.payload_version) g
                       WHERE w.payload_version IS NOT NULL
                       OFFSET 0) x ON true
    CROSS JOIN LATERAL (SELECT CASE
        WHEN w.id IS NULL THEN 'no webhook is configured'
        WHEN NOT whk.route_target_open(w.status, w.deleted_at, w.quarantine_stage, a.status) THEN
            CASE WHEN w.status NOT IN ('active', 'paused')
                     THEN pg_catalog.format('the webhook is %s%s', w.status, ': ' || w.disabled_reason)
                 WHEN a.status NOT IN ('active', 'suspended')
                     THEN pg_catalog.format('its consumer %s is %s', a.id, a.status)
                 ELSE pg_catalog.format('the webhook is quarantined: its data broke routing (%s)',
                                        w.quarantine_reason) END
        WHEN NOT whk.event_type_matches(w.event_types, e.event_type) THEN
            pg_catalog.format('event type %s is not among its event types %s', e.event_type, w.event_types)
        WHEN NOT whk.route_payload_matches(w.filter, coalesce(x.body, e.envelope), x.problem) THEN
            pg_catalog.format('its filter %s is not true for this event', w.filter)
    END AS miss) m
    ORDER BY e.n, w.id;
END;
$$;
REVOKE EXECUTE ON FUNCTION whk.explain(text) FROM PUBLIC;
COMMENT ON FUNCTION whk.explain(text) IS
    'Run one ERP INSERT/UPDATE/DELETE/MERGE in a savepoint that is always rolled back and return the events it '
    'would emit, per webhook: routed or why not, and the request (method, url, headers, body). The signature '
    'column is NULL here and filled by the CLI (whk explain) or API, which hold the key: the webhook secret is '
    'encrypted at rest. Refuses DDL, transaction control, several statements and anything touching schema whk.';
