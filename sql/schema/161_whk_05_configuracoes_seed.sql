-- Defaults every install starts with (the anchors are Svix's and Standard Webhooks' published promises).
-- Every key here is read by the code: tests/unit/test_settings_read.py names each one's reader.
INSERT INTO whk.whk_05_configuracoes (key, category, value, description) VALUES
    ('retry.policy', 'retry',
     '{"schedule_s": [5, 300, 1800, 7200, 18000, 36000, 36000], "jitter": 0.2, "throttle_floor_s": 60, "retry_after_cap_factor": 2.0}',
     'Delays after the first attempt; after the last one the delivery becomes a dead letter.'),
    ('rate_limit.webhook_default', 'rate_limit', '{"per_second": null, "burst": null, "max_in_flight": 10}',
     'Limits applied to webhooks that set none (null = unlimited).'),
    ('rate_limit.api_per_minute', 'rate_limit', '600', 'API requests per consumer per minute.'),
    ('security.rotation_grace_hours', 'security', '24', 'Old signing keys stay valid this long after rotation.'),
    ('security.max_old_keys', 'security', '10', 'At most this many old keys sign during a grace period.'),
    ('delivery.breaker', 'delivery', '{"failure_threshold": 5, "open_s": 60, "open_max_s": 600}',
     'Circuit breaker defaults per webhook.'),
    ('delivery.auto_disable_after_s', 'delivery', '432000',
     'A webhook failing without a single success for this long is disabled (5 days).'),
    ('delivery.response_body_max_bytes', 'delivery', '20000', 'Response bytes kept per attempt.'),
    ('monitoring.oldest_pending_warn_s', 'monitoring', '300',
     'Health degrades when the oldest pending delivery is older than this.'),
    ('dev.mock_keep_per_name', 'dev', '1000', 'Requests kept per development mock endpoint (newest first).'),
    ('dev.mock_max_rows', 'dev', '50000', 'Requests kept by all development mock endpoints together.'),
    ('dev.mock_retention_hours', 'dev', '24', 'Development mock requests older than this are deleted.');
