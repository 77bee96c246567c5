-- The end of the consumer's quiet hours at p_at, or NULL when p_at is outside every window.
--
-- A window {"days": ["mon", …], "start": "22:00", "end": "07:00"} starts on each listed day at start, local
-- time in the quiet hours' time_zone, and ends at end the same day, or the next day when end is at or
-- before start: weekdays 22:00-07:00 covers Friday 22:00 to Saturday 07:00, not Sunday night. Windows that
-- touch or overlap are joined (the answer is the end of the last one), up to 16 hops, so a configuration
-- that is quiet all week answers a time at least 16 window ends later, never loops. Local times that do
-- not exist or repeat around a daylight-saving change are resolved as PostgreSQL's AT TIME ZONE does.
--
-- Callers ask it through whk.quiet_hold_until (the one quiet-hours rule: urgent webhooks are not held), so
-- a quiet consumer's waiting deliveries cost no round until the window ends. p_at is a parameter so tests
-- choose the moment.
CREATE OR REPLACE FUNCTION whk.quiet_until(p_quiet jsonb, p_at timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql
STABLE PARALLEL SAFE
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_tz   text := p_quiet ->> 'time_zone';
    v_at   timestamptz := p_at;
    v_end  timestamptz;
BEGIN
    IF p_quiet IS NULL OR p_at IS NULL THEN
        RETURN NULL;
    END IF;
    FOR v_hop IN 1 .. 16 LOOP
        -- Windows that started on the local day of v_at or the day before (a window is under 24 hours).
        SELECT max(x.ends) INTO v_end
        FROM jsonb_array_elements(p_quiet -> 'windows') AS w(win)
        CROSS JOIN LATERAL (VALUES ((v_at AT TIME ZONE v_tz)::date),
                                   ((v_at AT TIME ZONE v_tz)::date - 1)) AS d(day)
        CROSS JOIN LATERAL (
            SELECT (d.day + (w.win ->> 'start')::time) AT TIME ZONE v_tz AS starts,
                   (d.day + (w.win ->> 'end')::time
                    + CASE WHEN (w.win ->> 'end')::time <= (w.win ->> 'start')::time
                           THEN interval '1 day' ELSE interval '0' END) AT TIME ZONE v_tz AS ends
        ) x
        WHERE (w.win -> 'days')
              ? (ARRAY['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'])[extract(isodow FROM d.day)::integer]
          AND v_at >= x.starts AND v_at < x.ends;
        EXIT WHEN v_end IS NULL;
        v_at := v_end;
    END LOOP;
    RETURN CASE WHEN v_at > p_at THEN v_at END;
END;
$$;
COMMENT ON FUNCTION whk.quiet_until(jsonb, timestamptz) IS
    'End of the quiet hours in force at a moment (NULL: not quiet then).';
