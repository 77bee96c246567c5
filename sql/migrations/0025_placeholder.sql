-- 0025 placeholder: local only, not committed (another engineer's migration takes this number).
BEGIN;
SELECT whk.migration_begin(25, 'placeholder');
COMMIT;
