-- Bounds of the JSON settings, as CHECKs that call the whk.*_problem functions (a fresh install adds them after
-- the functions). The plain numeric columns carry their bounds in their own table files. Every bound is listed
-- in docs/configuration.md ("Bounds of every setting"); the API schema has the same ones. Alert rules carry
-- theirs as jsonpath CHECKs in their own table file (sql/schema/710_operations.sql).
ALTER TABLE whk.whk_01_webhooks
    ADD CONSTRAINT whk_01_webhooks_retry_policy_bounds CHECK (whk.retry_policy_problem(retry_policy) IS NULL),
    ADD CONSTRAINT whk_01_webhooks_breaker_config_bounds CHECK (whk.breaker_config_problem(breaker_config) IS NULL);
ALTER TABLE whk.whk_05_configuracoes
    ADD CONSTRAINT whk_05_configuracoes_value_bounds CHECK (whk.config_value_problem(key, value) IS NULL);
ALTER TABLE whk.whk_04_assinantes
    ADD CONSTRAINT whk_04_assinantes_quiet_hours_bounds CHECK (whk.quiet_hours_problem(quiet_hours) IS NULL);
