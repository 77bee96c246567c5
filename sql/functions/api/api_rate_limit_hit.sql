-- whk.api_rate_limit_hit: count one API request of p_subject against a GCRA limit of p_limit requests per
-- p_window_s seconds (bursts up to p_limit). One row lock per subject serialises that subject's requests
-- across every API process; other subjects never wait. p_limit NULL = the global default
-- (whk_05_configuracoes 'rate_limit.api_per_minute', scaled to the window). p_now is injectable for tests.
CREATE OR REPLACE FUNCTION whk.api_rate_limit_hit(
    p_subject text,
    p_limit integer,
    p_window_s double precision DEFAULT 60,
    p_now timestamptz DEFAULT clock_timestamp()
)
RETURNS TABLE (allowed boolean, limit_count integer, remaining integer, retry_after_s double precision,
               reset_s double precision)
LANGUAGE plpgsql
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_limit    integer := p_limit;
    v_interval double precision;          -- seconds between requests at the sustained rate
    v_tolerance double precision;         -- how far ahead of now the TAT may run (the burst)
    v_tat      timestamptz;
    v_ahead    double precision;
BEGIN
    IF v_limit IS NULL THEN
        SELECT least(ceil((c.value #>> '{}')::numeric * p_window_s / 60), 2147483647)::integer INTO v_limit
        FROM whk.whk_05_configuracoes c WHERE c.key = 'rate_limit.api_per_minute';
        v_limit := coalesce(v_limit, 600);
    END IF;
    -- At least one request per window: the interval below divides by the limit.
    v_limit := greatest(v_limit, 1);
    v_interval := p_window_s / v_limit;
    v_tolerance := p_window_s - v_interval;

    INSERT INTO whk.api_rate_limits AS r (subject, tat) VALUES (p_subject, p_now)
    ON CONFLICT (subject) DO NOTHING;
    SELECT r.tat INTO v_tat FROM whk.api_rate_limits r WHERE r.subject = p_subject FOR UPDATE;
    v_tat := greatest(v_tat, p_now);
    v_ahead := extract(epoch FROM v_tat - p_now);

    IF v_ahead > v_tolerance + 1e-6 THEN
        allowed := false;
        limit_count := v_limit;
        remaining := 0;
        retry_after_s := v_ahead - v_tolerance;
        reset_s := v_ahead;
        RETURN NEXT;
        RETURN;
    END IF;

    v_tat := v_tat + make_interval(secs => v_interval);
    UPDATE whk.api_rate_limits r SET tat = v_tat WHERE r.subject = p_subject;
    v_ahead := v_ahead + v_interval;
    allowed := true;
    limit_count := v_limit;
    remaining := greatest(0, floor((p_window_s - v_ahead) / v_interval + 1e-6)::integer);
    retry_after_s := 0;
    reset_s := v_ahead;
    RETURN NEXT;
END;
$$;
COMMENT ON FUNCTION whk.api_rate_limit_hit(text, integer, double precision, timestamptz) IS
    'GCRA rate limit shared across API processes: allowed?, limit, remaining, retry-after and reset seconds.';
