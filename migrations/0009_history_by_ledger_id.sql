-- A replay writes one history row per reset ledger row, inside its one
-- reset transaction; indexing them by the ledger row's id (a bigint, close
-- to its neighbours) instead of the event id (random text) makes that write
-- markedly cheaper. Lookups by event id go through the ledger's own index.
ALTER TABLE replay_history ADD COLUMN ledger_id BIGINT;
UPDATE replay_history h SET ledger_id = p.id FROM processed_events p WHERE p.event_id = h.event_id;
CREATE INDEX replay_history_ledger_idx ON replay_history (ledger_id);
DROP INDEX replay_history_event_idx;
