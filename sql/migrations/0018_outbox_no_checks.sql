-- 0018 outbox_no_checks: whk.outbox loses its two CHECK constraints (operation, status).
-- Why: PostgreSQL prepares a table's CHECK expressions again in every INSERT statement (the expression is
-- read from the catalog's text form and planned for each statement, not cached per session). Every captured
-- ERP statement writes the outbox once, so it paid both: measured on PostgreSQL 15, a one-row INSERT into
-- whk.outbox as a statement of its own took 60 us with the two CHECKs and 40 us without them (~20 us, about
-- 10% of a single-row captured INSERT's commit). Domains instead of CHECKs measured 45 us.
-- What still guards the values: the only writers are WHK's own SECURITY DEFINER code (generated capture
-- triggers write constants, whk.emit writes 'EMIT', the router sets 'routed' or 'invalid'); ERP roles have
-- no privilege on whk tables. The router only ever reads status = 'pending'; a row a DBA writes with any
-- other status is simply never routed.
-- Locking: ACCESS EXCLUSIVE on whk.outbox and its partitions for the catalog change only (no scan, no
-- rewrite); captured ERP writes wait for it, so run it when a brief pause is acceptable.
BEGIN;
SELECT whk.migration_begin(18, 'outbox_no_checks');

ALTER TABLE whk.outbox DROP CONSTRAINT outbox_operation_check, DROP CONSTRAINT outbox_status_check;
COMMENT ON COLUMN whk.outbox.operation IS
    'INSERT, UPDATE, DELETE (capture triggers, constants) or EMIT (whk.emit). No CHECK: see migration 0018.';
COMMENT ON COLUMN whk.outbox.status IS
    'pending (as written), routed or invalid (set by the router only). No CHECK: see migration 0018.';

COMMIT;
