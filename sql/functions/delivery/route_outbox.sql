-- Route up to p_limit pending outbox events (whk.route_and_take with nothing taken; returns the count): mark them routed, give each a commit_seq (the order in which
-- they became visible, which is commit order across transactions) and fan them out to every matching
-- active webhook in ONE set-based INSERT. Events nobody subscribes to are routed too and kept for replay.
--
-- Claimed by status, never by an id watermark: ids are taken before commit, so a low id can become
-- visible after higher ones; a watermark would skip it forever. Routing runs under a transaction-level
-- advisory lock so commit_seq is monotonic across dispatchers (a second router returns 0 at once and
-- goes on delivering; the lock is held for one short statement batch).
--
-- Filters are SQL/JSON path predicates stored as the jsonpath type (validated by PostgreSQL on write);
-- `@@` yields NULL rather than an error on structural mismatches, which counts as "no match".
-- Non-strict schema validation: events of registered, non-strict types are checked here with
-- whk.validate_payload (capture) and flagged (outbox.valid / validation_error) but still delivered;
-- strict types were validated when emitted (valid = true already); unregistered types stay NULL.
CREATE OR REPLACE FUNCTION whk.route_outbox(p_limit integer)
RETURNS integer
LANGUAGE sql
SET search_path = pg_catalog, whk
AS $$
    SELECT coalesce(max(r.routed), 0)::integer FROM whk.route_and_take(p_limit, NULL, 0, 0) r;
$$;
