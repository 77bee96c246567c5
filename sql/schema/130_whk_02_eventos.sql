-- Event types (eventos): the catalog of what can be emitted, with delivery settings and firing history.
CREATE TABLE whk.whk_02_eventos (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name              text        NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$'),
    description       text        NOT NULL DEFAULT '',
    category          text        NOT NULL DEFAULT 'custom',
    -- strict: payloads are validated in the emitting transaction (invalid = RAISE); otherwise downstream.
    strict            boolean     NOT NULL DEFAULT false,
    current_major     integer     NOT NULL DEFAULT 1 CHECK (current_major > 0),
    current_minor     integer     NOT NULL DEFAULT 0 CHECK (current_minor >= 0),
    metadata          jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    delivery_settings jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(delivery_settings) = 'object'),
    -- Firing history, maintained in aggregate by the router (not per row inside ERP transactions).
    fire_count        bigint      NOT NULL DEFAULT 0,
    last_fired_at     timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT whk_02_eventos_name_key UNIQUE (name)
);
COMMENT ON TABLE whk.whk_02_eventos IS 'Event type catalog: name, description, strictness, versions, counters.';

-- One row per published schema version of an event type (JSON Schema draft 2020-12).
CREATE TABLE whk.whk_02_eventos_versoes (
    event_type_id bigint      NOT NULL REFERENCES whk.whk_02_eventos (id) ON DELETE CASCADE,
    major         integer     NOT NULL CHECK (major > 0),
    minor         integer     NOT NULL CHECK (minor >= 0),
    schema        jsonb       NOT NULL CHECK (jsonb_typeof(schema) = 'object'),
    changelog     text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- The version's compiled fast check: the JSON Schema translated into a jsonpath predicate, evaluated in
    -- C by whk.validate_payload before (and instead of) the PL/pgSQL reference validator. Written by the
    -- trigger whk_02_eventos_versoes_check_path; NULL = the schema needs the reference validator for every
    -- payload (see whk.jsonschema_predicate for what is translated).
    check_path    jsonpath,
    PRIMARY KEY (event_type_id, major, minor)
);
COMMENT ON TABLE whk.whk_02_eventos_versoes IS 'Schema versions per event type; minor = additive, major = breaking.';
COMMENT ON COLUMN whk.whk_02_eventos_versoes.check_path IS
    'Compiled fast check of schema (TRUE only for valid data); NULL = validated by whk.jsonschema_error only.';
