-- `replay events list --since` (the runbook's "recent events") selects by
-- received_at, which no index covered: on a large ledger the planner read
-- every row (found by ledger::every_selector_and_runbook_query_is_served_by_an_index).
-- received_at is set once, at insert, and never changed, so it rises with
-- the heap's physical order: a BRIN index (a few pages for millions of rows,
-- next to nothing per insert) narrows the read to the last block ranges,
-- where a btree would cost the worker one more index write per event.
CREATE INDEX processed_events_received_at_brin ON processed_events USING BRIN (received_at);
