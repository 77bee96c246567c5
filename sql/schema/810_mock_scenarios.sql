-- What a development mock endpoint answers, request by request (whk/mockscenario.py is the format and the
-- decision; the pytest plugin's receiver plays the same). Stored here, not in an API worker's memory, so
-- every worker agrees on the script and on how far it has got (served, advanced under the row lock).
-- The steps are parallel arrays (status, wait before answering, time over which the body is dripped) so
-- their bounds are plain CHECKs, the same as the API schema's.
CREATE TABLE whk.mock_scenarios (
    mock_name     text             PRIMARY KEY CHECK (mock_name ~ '^[A-Za-z0-9_-]{1,64}$'),
    step_status   integer[]        NOT NULL DEFAULT '{}',
    step_delay_ms integer[]        NOT NULL DEFAULT '{}',
    step_drip_ms  integer[]        NOT NULL DEFAULT '{}',
    then_status   integer          NOT NULL DEFAULT 200 CHECK (then_status BETWEEN 200 AND 599),
    then_delay_ms integer          NOT NULL DEFAULT 0 CHECK (then_delay_ms BETWEEN 0 AND 30000),
    then_drip_ms  integer          NOT NULL DEFAULT 0 CHECK (then_drip_ms BETWEEN 0 AND 30000),
    -- Only compared with a hash-derived number in [0, 1), never used in arithmetic: no floor needed.
    fail_rate     double precision NOT NULL DEFAULT 0 CHECK (fail_rate >= 0 AND fail_rate <= 1),
    fail_status   integer          NOT NULL DEFAULT 503 CHECK (fail_status BETWEEN 200 AND 599),
    seed          integer          NOT NULL DEFAULT 0 CHECK (seed >= 0),
    -- Requests answered since the scenario was set: the next one is request number `served`.
    served        bigint           NOT NULL DEFAULT 0 CHECK (served >= 0),
    updated_at    timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT mock_scenarios_steps_bounds CHECK (
        cardinality(step_status) <= 100
        AND cardinality(step_delay_ms) = cardinality(step_status)
        AND cardinality(step_drip_ms) = cardinality(step_status)
        AND coalesce(array_ndims(step_status), 1) = 1
        AND array_position(step_status, NULL) IS NULL
        AND array_position(step_delay_ms, NULL) IS NULL
        AND array_position(step_drip_ms, NULL) IS NULL
        AND 200 <= ALL (step_status) AND 599 >= ALL (step_status)
        AND 0 <= ALL (step_delay_ms) AND 30000 >= ALL (step_delay_ms)
        AND 0 <= ALL (step_drip_ms) AND 30000 >= ALL (step_drip_ms))
);
COMMENT ON TABLE whk.mock_scenarios IS
    'Development mock endpoints: the scripted answers per mock name (steps, then, seeded random failures).';
