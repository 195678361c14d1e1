-- An operator can mark a failed event resolved (`replay dlq resolve`): it
-- leaves the DLQ view, the row and its error stay. A new failure clears it.
ALTER TABLE processed_events ADD COLUMN resolved_at TIMESTAMPTZ, ADD COLUMN resolved_note TEXT;
CREATE INDEX processed_events_unresolved_error_idx ON processed_events (processed_at)
    WHERE status = 'error' AND resolved_at IS NULL;
