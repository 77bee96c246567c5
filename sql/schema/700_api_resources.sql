-- Indexes behind the management API's list, filter and statistics endpoints (migration 0007).
-- Every list is keyset-paginated by (sort column, id) under the caller's tenant, so each common filter
-- has an index that starts with the tenant or webhook and ends with id: a page costs the same with
-- ten thousand or a million deliveries (bench/api.py measures it).

-- GET /deliveries?consumer=…&status=… (the tenant's own view) and ?webhook_id=…&status=….
CREATE INDEX whk_03_entregas_consumer_status_idx ON whk.whk_03_entregas (consumer_id, status, id DESC);
CREATE INDEX whk_03_entregas_webhook_status_idx ON whk.whk_03_entregas (webhook_id, status, id DESC);
-- GET /deliveries?event_type=… (admin and tenant).
CREATE INDEX whk_03_entregas_type_idx ON whk.whk_03_entregas (event_type, id DESC);
CREATE INDEX whk_03_entregas_consumer_type_idx ON whk.whk_03_entregas (consumer_id, event_type, id DESC);
-- Time windows: delivery statistics, bulk retry by time range, created_from/created_to filters.
CREATE INDEX whk_03_entregas_created_idx ON whk.whk_03_entregas (created_at, id);
-- GET /deliveries/failed for one tenant, most recent dead letters first.
CREATE INDEX whk_03_entregas_consumer_dead_idx ON whk.whk_03_entregas (consumer_id, dead_at DESC, id DESC)
    WHERE status = 'dead';
-- Attempt latency percentiles over a time window.
CREATE INDEX whk_03_entregas_tentativas_started_idx ON whk.whk_03_entregas_tentativas (started_at);
-- GET /events/history of one tenant: its deliveries in event order, grouped per event as they stream.
CREATE INDEX whk_03_entregas_consumer_event_idx
    ON whk.whk_03_entregas (consumer_id, event_created_at DESC, outbox_id DESC);
-- GET /events/history (admin), newest first (per partition).
CREATE INDEX outbox_created_id_idx ON whk.outbox (created_at DESC, id DESC);
-- GET /monitoring/alerts of one tenant.
CREATE INDEX whk_06_alertas_consumer_idx ON whk.whk_06_alertas (consumer_id, id);
