-- whk.kpi_dispatchers: dispatcher processes and the age of their last heartbeat. A dispatcher is live while
-- heartbeat_age_s is within WHK_LEASE_SECONDS and it is not stopping (the lease is a process setting, so
-- readers apply it).
CREATE OR REPLACE VIEW whk.kpi_dispatchers AS
SELECT x.id, x.hostname, x.pid, x.started_at, x.stopping,
       extract(epoch FROM clock_timestamp() - x.heartbeat_at)::double precision AS heartbeat_age_s
FROM whk.dispatchers x;
COMMENT ON VIEW whk.kpi_dispatchers IS 'Dispatcher processes with the age of their last heartbeat.';
