-- Tables and triggers of bench/capture.py: four identical ERP tables, one per variant.
CREATE SCHEMA bench;
CREATE TABLE bench.t_none (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text,
    qty        integer,
    price      numeric,
    updated_at timestamptz DEFAULT now()
);
CREATE TABLE bench.t_bare (LIKE bench.t_none INCLUDING ALL);
CREATE TABLE bench.t_naive_notify (LIKE bench.t_none INCLUDING ALL);
CREATE TABLE bench.t_whk (LIKE bench.t_none INCLUDING ALL);

-- Baseline: the cheapest correct outbox, a row trigger that only inserts the outbox row.
CREATE FUNCTION bench.bare_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO whk.outbox (event_type, event_key, data, source_table, operation)
    VALUES ('bench.item.created', NEW.id::text, to_jsonb(NEW), TG_TABLE_NAME, TG_OP);
    RETURN NULL;
END;
$$;
CREATE TRIGGER bare AFTER INSERT ON bench.t_bare FOR EACH ROW EXECUTE FUNCTION bench.bare_outbox();

-- The naive wake-up: the same outbox row plus a NOTIFY on every commit.
CREATE FUNCTION bench.naive_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO whk.outbox (event_type, event_key, data, source_table, operation)
    VALUES ('bench.item.created', NEW.id::text, to_jsonb(NEW), TG_TABLE_NAME, TG_OP);
    PERFORM pg_notify('whk_outbox', NEW.id::text);
    RETURN NULL;
END;
$$;
CREATE TRIGGER naive AFTER INSERT ON bench.t_naive_notify FOR EACH ROW EXECUTE FUNCTION bench.naive_notify();

-- WHK: the real thing.
SELECT whk.enable_capture('bench.t_whk', 'bench.item');

-- The 50,000-row UPDATE, with and without capture.
CREATE TABLE bench.u_none (LIKE bench.t_none INCLUDING ALL);
CREATE TABLE bench.u_whk (LIKE bench.t_none INCLUDING ALL);
INSERT INTO bench.u_none (name, qty, price) SELECT 'item ' || i, i % 100, i * 0.5 FROM generate_series(1, 50000) AS i;
INSERT INTO bench.u_whk (name, qty, price) SELECT 'item ' || i, i % 100, i * 0.5 FROM generate_series(1, 50000) AS i;
SELECT whk.enable_capture('bench.u_whk', 'bench.bulk');

-- A dispatcher that is busy (the steady state under load) and listens on whk_outbox.
INSERT INTO whk.dispatchers (id, hostname, pid, version, idle) VALUES ('bench', 'bench', 0, 'bench', false);

-- Aggregate capture (GOAL capture_aggregate_vs_bare_trigger): an order and its 20 lines in one transaction.
-- Baseline: the same bare row trigger on both tables (21 outbox rows per transaction, the naive thing);
-- WHK: the order as an aggregate root with its lines, one event per transaction written at commit.
CREATE TABLE bench.o_bare (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer   text,
    status     text,
    total      numeric,
    updated_at timestamptz DEFAULT now()
);
CREATE TABLE bench.ol_bare (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES bench.o_bare (id),
    line_no  integer,
    sku      text,
    qty      integer,
    price    numeric
);
CREATE INDEX ON bench.ol_bare (order_id);
CREATE TABLE bench.o_whk (LIKE bench.o_bare INCLUDING ALL);
CREATE TABLE bench.ol_whk (LIKE bench.ol_bare INCLUDING ALL);
ALTER TABLE bench.ol_whk ADD FOREIGN KEY (order_id) REFERENCES bench.o_whk (id);
CREATE TRIGGER bare AFTER INSERT ON bench.o_bare FOR EACH ROW EXECUTE FUNCTION bench.bare_outbox();
CREATE TRIGGER bare AFTER INSERT ON bench.ol_bare FOR EACH ROW EXECUTE FUNCTION bench.bare_outbox();
SELECT whk.enable_capture('bench.o_whk', 'bench.order', aggregate => ARRAY['bench.ol_whk.order_id']);
