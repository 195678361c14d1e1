-- What an emergency stop keeps while it takes the queue and restores: the
-- legitimate events (and the messages that are not events) it took off the
-- queue, saved batch by batch before each batch is acked, and the events first
-- seen since the backup, saved before the restore. Control plane, outside
-- every dump, so a restore cannot erase them; put back into the ledger and
-- dead_letters (and deleted from here) in one transaction after the restore,
-- by this stop or, if it died, by the next one that holds the apply lock.
CREATE TABLE replay_control.emergency_saved_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Once each: a message redelivered after a stop died between a batch's
    -- commit and its ack is saved once.
    event_id    TEXT        NOT NULL UNIQUE,
    event_type  TEXT        NOT NULL,
    payload     JSONB       NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL,
    saved_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE replay_control.emergency_saved_dead_letters (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    exchange    TEXT        NOT NULL,
    routing_key TEXT        NOT NULL,
    message_id  TEXT,
    headers     JSONB       NOT NULL DEFAULT '{}',
    body        BYTEA       NOT NULL,
    reason      TEXT        NOT NULL,
    saved_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
