-- Every processed row was written into two processing-time indexes,
-- (status, processed_at) and (processed_at). One index, processing time
-- first with the status beside it, serves what both served (checked by
-- ledger::every_selector_and_runbook_query_is_served_by_an_index on 200,000
-- rows), for one index write per event less in the worker:
-- - processing-time ranges, with or without a status (the status is read
--   from the index entry, not the row): the runbook's failed events of the
--   last 24 h, the console's per-minute counts, prune's oldest processed rows,
--   and max(processed_at) for health;
-- - a status alone: failed and skipped rows through
--   processed_events_failed_time_idx and processed_events_unresolved_error_idx,
--   pending and processing ones through processed_events_due_idx; processed
--   rows are nearly the whole ledger, read in event-time order.
-- Rows a replay reset (processed_at NULL) still cost no entry.
CREATE INDEX processed_events_processing_time_idx ON processed_events (processed_at, status)
    WHERE processed_at IS NOT NULL;
DROP INDEX processed_events_status_processed_at_idx;
DROP INDEX processed_events_processed_at_idx;
