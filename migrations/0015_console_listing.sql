-- The console lists events latest event time first, a keyset page at a time
-- (`ledger::Order::LatestFirst`: ORDER BY occurred_at DESC, id DESC). Each
-- filter gets an index in exactly that order, so a page is one short index
-- range instead of a walk back through every row newer than the ones asked
-- for (measured on 1,000,000 rows with the matching rows among the oldest:
-- about 200 ms each without these; see README "Benchmarks"):
-- - no filter: processed_events_occurred_at_idx (occurred_at, id), from 0004;
-- - a type: the type index gains the id, which also ends the planner's
--   choice of the time index filtered by type (it assumes matching rows are
--   spread evenly, and old ones are not). Same columns plus one, same cost.
-- - failed or skipped rows, rare and often old: a partial index holding only
--   rows in those states, so recording and replaying processed rows never
--   touches it.
CREATE INDEX processed_events_type_time_idx ON processed_events (event_type, occurred_at, id);
DROP INDEX processed_events_type_occurred_at_idx;
CREATE INDEX processed_events_failed_time_idx ON processed_events (occurred_at, id)
    WHERE status IN ('error', 'skipped');
