-- Audit covers SQL too: a change to WHK's configuration made in plain SQL (a DBA's UPDATE, whk.create_webhook,
-- whk.pause_webhook, whk.enable_capture, ...) is written to whk.audit_log in the same transaction, with the
-- database role as the actor ('sql:<login>' or 'sql:<login>/<role>' after SET ROLE). Tables: webhooks
-- (whk_01_webhooks), consumers (whk_04_assinantes), event types (whk_02_eventos) and their transforms
-- (whk_02_eventos_transforms), capture (capture_config) and global settings (whk_05_configuracoes).
--
-- Exactly one row per change: WHK's processes audit their own changes with a better actor (the API its
-- principal, the dispatcher 'whk-dispatcher'); their connections carry the session setting
-- whk.audited_by (whk.dbroles.with_audit_marker), honoured only for members of their roles, so any
-- other role's SQL is always audited. Columns the platform maintains on its own (usage counters, firing
-- history, the secret state, updated_at) are not configuration: a change of only those writes nothing.
-- Secrets never reach the trail: ciphertext columns are replaced by '[redacted]'.
--
-- SECURITY INVOKER on purpose (current_user is the role making the change); the row is written by the
-- SECURITY DEFINER whk.audit_sql_write, so a role with no grant on the audit table is audited all the same.
CREATE OR REPLACE FUNCTION whk.audit_sql_write(p_action text, p_target_type text, p_target_id text,
                                               p_consumer_id bigint, p_before jsonb, p_after jsonb)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, whk, pg_temp
AS $$
    INSERT INTO whk.audit_log (actor, consumer_id, action, target_type, target_id, before, after)
    VALUES ('sql:' || session_user
                || CASE WHEN current_setting('role') NOT IN ('none', session_user::text)
                        THEN '/' || current_setting('role') ELSE '' END,
            p_consumer_id, p_action, p_target_type, p_target_id, p_before, p_after)
$$;
COMMENT ON FUNCTION whk.audit_sql_write(text, text, text, bigint, jsonb, jsonb) IS
    'Append one audit row for a change made in SQL; the actor is the database role (session user and SET ROLE).';

CREATE OR REPLACE FUNCTION whk.audit_sql_change()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, whk, pg_temp
AS $$
DECLARE
    -- TG_ARGV: target type, id column, consumer column ('' = none), verb of INSERT, verb of DELETE.
    v_maintained CONSTANT text[] := ARRAY['updated_at', 'needs_secret_since', 'usage_deliveries_total',
                                          'usage_deliveries_failed', 'last_activity_at', 'fire_count',
                                          'last_fired_at'];
    v_secret     CONSTANT text[] := ARRAY['auth_credential_enc'];
    v_old  jsonb;
    v_new  jsonb;
    v_row  jsonb;
    v_col  text;
    v_verb text;
BEGIN
    IF coalesce(current_setting('whk.audited_by', true), '') <> ''
       AND (pg_has_role(current_user, 'whk_app', 'MEMBER') OR pg_has_role(current_user, 'whk_dispatcher', 'MEMBER')) THEN
        RETURN NULL;  -- the process writes its own audit row
    END IF;
    IF TG_OP <> 'INSERT' THEN
        v_old := to_jsonb(OLD) - v_maintained;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        v_new := to_jsonb(NEW) - v_maintained;
    END IF;
    IF TG_OP = 'UPDATE' AND v_old = v_new THEN
        RETURN NULL;  -- only columns the platform maintains changed
    END IF;
    FOREACH v_col IN ARRAY v_secret LOOP
        IF v_old ? v_col AND v_old ->> v_col IS NOT NULL THEN
            v_old := jsonb_set(v_old, ARRAY[v_col], '"[redacted]"');
        END IF;
        IF v_new ? v_col AND v_new ->> v_col IS NOT NULL THEN
            v_new := jsonb_set(v_new, ARRAY[v_col], '"[redacted]"');
        END IF;
    END LOOP;
    v_row := coalesce(v_new, v_old);
    v_verb := CASE TG_OP WHEN 'INSERT' THEN TG_ARGV[3] WHEN 'UPDATE' THEN 'update' ELSE TG_ARGV[4] END;
    PERFORM whk.audit_sql_write(TG_ARGV[0] || '.' || v_verb, TG_ARGV[0], v_row ->> TG_ARGV[1],
                                CASE WHEN TG_ARGV[2] <> '' THEN (v_row ->> TG_ARGV[2])::bigint END,
                                v_old, v_new);
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.audit_sql_change() IS
    'Trigger: audit a configuration change made in SQL (not by an API or dispatcher connection), same transaction.';

CREATE TRIGGER whk_01_webhooks_audit
    AFTER INSERT OR UPDATE OR DELETE ON whk.whk_01_webhooks
    FOR EACH ROW EXECUTE FUNCTION whk.audit_sql_change('webhook', 'id', 'consumer_id', 'create', 'delete');
CREATE TRIGGER whk_04_assinantes_audit
    AFTER INSERT OR UPDATE OR DELETE ON whk.whk_04_assinantes
    FOR EACH ROW EXECUTE FUNCTION whk.audit_sql_change('consumer', 'id', 'id', 'create', 'delete');
CREATE TRIGGER whk_02_eventos_audit
    AFTER INSERT OR UPDATE OR DELETE ON whk.whk_02_eventos
    FOR EACH ROW EXECUTE FUNCTION whk.audit_sql_change('event_type', 'name', '', 'register', 'delete');
-- Target id: the event type's id (a transform is known by its type and its two majors, all in `after`).
CREATE TRIGGER whk_02_eventos_transforms_audit
    AFTER INSERT OR UPDATE OR DELETE ON whk.whk_02_eventos_transforms
    FOR EACH ROW EXECUTE FUNCTION whk.audit_sql_change('event_transform', 'event_type_id', '', 'register', 'delete');
CREATE TRIGGER capture_config_audit
    AFTER INSERT OR UPDATE OR DELETE ON whk.capture_config
    FOR EACH ROW EXECUTE FUNCTION whk.audit_sql_change('capture', 'tbl', '', 'enable', 'disable');
CREATE TRIGGER whk_05_configuracoes_audit
    AFTER INSERT OR UPDATE OR DELETE ON whk.whk_05_configuracoes
    FOR EACH ROW EXECUTE FUNCTION whk.audit_sql_change('setting', 'key', '', 'create', 'delete');
