-- Why a consumer's quiet hours (whk_04_assinantes.quiet_hours) are refused, or NULL when they are fine
-- (NULL quiet hours: none). The answer starts with the JSON pointer of the offending member inside
-- quiet_hours ('/time_zone: …', '/windows/0/start: …'), so the API names the field and the SQL interface
-- (whk.set_consumer_quiet_hours) quotes it. The same bounds as the API (api/consumers/schemas.py QuietHours).
--
-- The shape: {"time_zone": "Europe/Lisbon", "windows": [{"days": ["mon", "tue"], "start": "22:00",
-- "end": "07:00"}]}: 1 to 14 windows, each on 1 to 7 distinct days, start and end HH:MM and different (an end
-- at or before the start is on the next day).
--
-- The time zone must be an IANA name (Area/Location, or UTC) that this database's time zone data knows.
-- Abbreviations (CEST) and POSIX offsets (UTC+3) are refused: they do not follow daylight saving time. The
-- lookup is pg_catalog.timezone() on the name, not a scan of pg_timezone_names (that reads every zone file,
-- milliseconds), because this runs as a CHECK on every write of the consumer row.
CREATE OR REPLACE FUNCTION whk.quiet_hours_problem(p_quiet jsonb)
RETURNS text
LANGUAGE plpgsql
STABLE PARALLEL SAFE
SET search_path = pg_catalog, whk
AS $$
DECLARE
    v_tz   text;
    v_win  jsonb;
    v_i    integer := 0;
    v_days jsonb;
BEGIN
    IF p_quiet IS NULL THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(p_quiet) <> 'object'
       OR EXISTS (SELECT 1 FROM jsonb_object_keys(p_quiet - 'time_zone' - 'windows')) THEN
        RETURN ': must be an object with exactly time_zone and windows';
    END IF;
    v_tz := p_quiet ->> 'time_zone';
    IF jsonb_typeof(p_quiet -> 'time_zone') IS DISTINCT FROM 'string' OR length(v_tz) > 64
       OR v_tz !~ '^(UTC|[A-Za-z][A-Za-z_-]*(/[A-Za-z0-9_+-]+){1,2})$' THEN
        RETURN '/time_zone: must be an IANA time zone name such as Europe/Lisbon or UTC';
    END IF;
    BEGIN
        PERFORM pg_catalog.timezone(v_tz, timestamptz '2000-01-01 00:00+00');
    EXCEPTION WHEN invalid_parameter_value THEN
        RETURN format('/time_zone: %s is not a time zone this database knows (see pg_timezone_names)', v_tz);
    END;
    IF jsonb_typeof(p_quiet -> 'windows') IS DISTINCT FROM 'array'
       OR jsonb_array_length(p_quiet -> 'windows') NOT BETWEEN 1 AND 14 THEN
        RETURN '/windows: must be a list of 1 to 14 windows';
    END IF;
    FOR v_win IN SELECT e FROM jsonb_array_elements(p_quiet -> 'windows') AS e LOOP
        IF jsonb_typeof(v_win) <> 'object' OR NOT v_win ?& ARRAY['days', 'start', 'end']
           OR EXISTS (SELECT 1 FROM jsonb_object_keys(v_win - 'days' - 'start' - 'end')) THEN
            RETURN format('/windows/%s: must be an object with exactly days, start and end', v_i);
        END IF;
        v_days := v_win -> 'days';
        IF jsonb_typeof(v_days) <> 'array' OR jsonb_array_length(v_days) NOT BETWEEN 1 AND 7
           OR EXISTS (SELECT 1 FROM jsonb_array_elements(v_days) d
                      WHERE d NOT IN ('"mon"', '"tue"', '"wed"', '"thu"', '"fri"', '"sat"', '"sun"'))
           OR (SELECT count(DISTINCT d) FROM jsonb_array_elements(v_days) d) <> jsonb_array_length(v_days) THEN
            RETURN format('/windows/%s/days: must be 1 to 7 distinct days among mon, tue, wed, thu, fri, sat, sun', v_i);
        END IF;
        IF jsonb_typeof(v_win -> 'start') <> 'string' OR v_win ->> 'start' !~ '^([01][0-9]|2[0-3]):[0-5][0-9]$' THEN
            RETURN format('/windows/%s/start: must be a time HH:MM between 00:00 and 23:59', v_i);
        END IF;
        IF jsonb_typeof(v_win -> 'end') <> 'string' OR v_win ->> 'end' !~ '^([01][0-9]|2[0-3]):[0-5][0-9]$' THEN
            RETURN format('/windows/%s/end: must be a time HH:MM between 00:00 and 23:59', v_i);
        END IF;
        IF v_win ->> 'start' = v_win ->> 'end' THEN
            RETURN format('/windows/%s/end: must differ from start (an end before the start is on the next day)', v_i);
        END IF;
        v_i := v_i + 1;
    END LOOP;
    RETURN NULL;
END;
$$;
COMMENT ON FUNCTION whk.quiet_hours_problem(jsonb) IS
    'Why quiet hours are refused (JSON pointer: message), or NULL when they are fine.';
