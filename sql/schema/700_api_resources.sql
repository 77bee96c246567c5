-- Indexes behind the management API's list, filter and statistics endpoints (migration 0007).
-- Every list is keyset-paginated by (sort column, id) under the caller's tenant, so each common filter
-- has an index that starts with the tenant or webhook and ends with id: a page costs the same with
-- ten thousand or a million deliveries (bench/api.py measures it). The delivery indexes are on the
-- history (whk.delivery_history, where the millions are); the live queue keeps only its webhook, tenant
-- and dead-letter indexes (sql/schema/150_whk_03_entregas.sql): live work is the backlog, and every index
-- there is paid again by every routed event.

-- GET /deliveries?consumer=…&status=… and ?webhook_id=…&status=… read the history through its webhook and
-- consumer indexes (sql/schema/150_whk_03_entregas.sql): almost every finished delivery is delivered, so a
-- status filter there keeps nearly every row it reads, and an index per (tenant, status) would be paid by
-- every delivery for a filter that selects nothing. The filters that do select (dead, pending, parked)
-- read the live queue.
-- GET /deliveries?event_type=… (admin; a tenant's reads its consumer index, filtered).
CREATE INDEX delivery_history_type_idx ON whk.delivery_history (event_type, id DESC);
-- Time windows: delivery statistics, bulk retry by time range, created_from/created_to filters.
CREATE INDEX delivery_history_created_idx ON whk.delivery_history (created_at, id);
-- Attempt latency percentiles over a time window.
CREATE INDEX whk_03_entregas_tentativas_started_idx ON whk.whk_03_entregas_tentativas (started_at);
-- GET /events/history of one tenant: its deliveries in event order, grouped per event as they stream.
CREATE INDEX delivery_history_consumer_event_idx
    ON whk.delivery_history (consumer_id, event_created_at DESC, outbox_id DESC);
-- GET /events/history (admin), newest first (per partition).
CREATE INDEX outbox_created_id_idx ON whk.outbox (created_at DESC, id DESC);
-- GET /monitoring/alerts of one tenant.
CREATE INDEX whk_06_alertas_consumer_idx ON whk.whk_06_alertas (consumer_id, id);
