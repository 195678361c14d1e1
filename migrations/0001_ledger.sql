-- The ledger: one row per domain event ever seen, whatever became of it.
CREATE TABLE processed_events (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        TEXT        NOT NULL UNIQUE,
    event_type      TEXT        NOT NULL,
    payload         JSONB       NOT NULL,
    occurred_at     TIMESTAMPTZ NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    status          TEXT        NOT NULL
        CHECK (status IN ('pending', 'processing', 'processed', 'error', 'skipped')),
    retry_count     INTEGER     NOT NULL DEFAULT 0,
    error_message   TEXT,
    processed_at    TIMESTAMPTZ,
    -- When the row may next be attempted: the retry time of a pending row, the
    -- lease expiry of a processing row. One column keeps the claim query on one index.
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    locked_by       TEXT,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The claim query: due pending rows and expired leases, and nothing else.
CREATE INDEX processed_events_due_idx ON processed_events (next_attempt_at)
    WHERE status IN ('pending', 'processing');
-- Runbook queries: failed events recently, recent events.
CREATE INDEX processed_events_status_processed_at_idx ON processed_events (status, processed_at);
CREATE INDEX processed_events_processed_at_idx ON processed_events (processed_at);
-- Replay selectors: a type over a range of event time, or a range alone.
CREATE INDEX processed_events_type_occurred_at_idx ON processed_events (event_type, occurred_at);
CREATE INDEX processed_events_occurred_at_idx ON processed_events (occurred_at);
-- Payload lookups (payload @> '{"contribution_id": "..."}').
CREATE INDEX processed_events_payload_idx ON processed_events USING GIN (payload jsonb_path_ops);

-- Wakes idle workers when a row becomes due (operator reset, replay); the
-- table stays the truth, since a notification is lost while nobody listens.
CREATE FUNCTION processed_events_notify_pending() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('replay_pending', '');
    RETURN NULL;
END;
$$;

-- Row-level so it fires only when a row turns pending; Postgres folds the
-- identical notifications of one transaction into one.
CREATE TRIGGER processed_events_pending_notify
    AFTER INSERT OR UPDATE OF status ON processed_events
    FOR EACH ROW WHEN (NEW.status = 'pending')
    EXECUTE FUNCTION processed_events_notify_pending();

-- Messages that could not be read as an event at all, kept with everything
-- needed to understand them.
CREATE TABLE dead_letters (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    exchange      TEXT        NOT NULL,
    routing_key   TEXT        NOT NULL,
    message_id    TEXT,
    headers       JSONB       NOT NULL DEFAULT '{}',
    body          BYTEA       NOT NULL,
    reason        TEXT        NOT NULL,
    resolved_at   TIMESTAMPTZ,
    resolved_note TEXT
);
CREATE INDEX dead_letters_unresolved_idx ON dead_letters (received_at) WHERE resolved_at IS NULL;
