-- Ordered consumption (issue: events applied in the order they were
-- published). Events that share a sequence key (for the cooperative: the
-- period a contribution, its decision and the period's close belong to) are
-- applied in ledger order; one that cannot be applied holds the later ones.
--
-- sequence_state, for a row that is not settled for good:
--   waiting   waits for a dependency that may be published later (not ready):
--             holds nothing, retried before every later batch;
--   blocking  failed (retrying or error) or released from a hold: later
--             events of its key are held behind it;
--   held      held behind the ledger row `held_behind`, applied once that one is.
-- NULL for every other row (processed, skipped, or reset by an operator).
ALTER TABLE processed_events
    ADD COLUMN sequence_key   TEXT,
    ADD COLUMN sequence_state TEXT CHECK (sequence_state IN ('waiting', 'blocking', 'held')),
    ADD COLUMN held_behind    BIGINT;

-- The hold check: the earliest blocking row of a key.
CREATE INDEX processed_events_blocking_idx ON processed_events (sequence_key, id)
    WHERE sequence_state IN ('blocking', 'held');
-- Waiters, retried before each batch.
CREATE INDEX processed_events_waiting_idx ON processed_events (id)
    WHERE sequence_state = 'waiting';
-- Releasing the rows held behind an event once it is applied.
CREATE INDEX processed_events_held_behind_idx ON processed_events (held_behind)
    WHERE held_behind IS NOT NULL;

-- The active worker of each partition (queue), with a fencing epoch that
-- every takeover raises: the control plane, so restores leave it alone.
CREATE TABLE replay_control.partition_leaders (
    partition   TEXT PRIMARY KEY,
    worker_id   TEXT        NOT NULL,
    epoch       BIGINT      NOT NULL,
    since       TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A worker that does not lead its partition stands by.
ALTER TABLE replay_control.worker_heartbeats DROP CONSTRAINT worker_heartbeats_state_check;
ALTER TABLE replay_control.worker_heartbeats
    ADD CONSTRAINT worker_heartbeats_state_check CHECK (state IN ('running', 'standby', 'paused', 'stopped'));

-- Partition queues `replay topology migrate` moved: their leader drains the
-- migration's holding queues before its own, then forgets the row.
CREATE TABLE replay_control.topology_migrations (
    queue       TEXT PRIMARY KEY,
    migrated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
