-- Transforms between the majors of an event type (docs/capture.md, "Versions and transforms"): a webhook
-- pinned to a major (whk_01_webhooks.payload_version) receives each event rendered to that major, through
-- the shortest chain of these steps. Written by whk.register_event_transform, which validates the function.
CREATE TABLE whk.whk_02_eventos_transforms (
    event_type_id bigint      NOT NULL REFERENCES whk.whk_02_eventos (id) ON DELETE CASCADE,
    from_major    integer     NOT NULL CHECK (from_major BETWEEN 1 AND 1000),
    to_major      integer     NOT NULL CHECK (to_major BETWEEN 1 AND 1000),
    -- The function, taking data jsonb and returning jsonb, schema-qualified and quoted (format('%I.%I')). Stored as text,
    -- not regprocedure: pg_upgrade refuses user tables with reg* columns other than regclass/regtype/regrole.
    -- The CHECK keeps it a bare qualified name, so it can never smuggle SQL into the routing statement.
    function      text        NOT NULL
                              CHECK (function ~ '^("([^"]|"")+"|[a-z_][a-z0-9_$]*)\.("([^"]|"")+"|[a-z_][a-z0-9_$]*)$'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_type_id, from_major, to_major),
    CONSTRAINT whk_02_eventos_transforms_two_majors CHECK (from_major <> to_major)
);
COMMENT ON TABLE whk.whk_02_eventos_transforms IS
    'Per event type: a function rendering data of from_major as to_major, for webhooks pinned to a major.';
COMMENT ON COLUMN whk.whk_02_eventos_transforms.function IS
    'Schema-qualified name of a function of (data jsonb) returning jsonb; whk.register_event_transform checks it.';
