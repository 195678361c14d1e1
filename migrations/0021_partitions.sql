-- Partitions (the stream spread over N queues by a key, through RabbitMQ's
-- consistent-hash exchange). Each ledger row records the key its event
-- travelled with (`x-partition-key`; NULL for an event without one) and the
-- partition whose leader applies it: the one whose queue its message came
-- from. A partition's claimer takes only its own rows, so one key is never
-- applied by two partitions at once.
ALTER TABLE processed_events
    ADD COLUMN partition_key   TEXT,
    ADD COLUMN partition_index SMALLINT NOT NULL DEFAULT 0;

-- The claim query, now per partition.
DROP INDEX processed_events_due_idx;
CREATE INDEX processed_events_due_idx ON processed_events (partition_index, next_attempt_at)
    WHERE status IN ('pending', 'processing');
-- Waiters of one partition, retried before each of its batches.
DROP INDEX processed_events_waiting_idx;
CREATE INDEX processed_events_waiting_idx ON processed_events (partition_index, id)
    WHERE sequence_state = 'waiting';

-- The outbox keeps the key, so a relayed event reaches the partition its
-- key belongs to.
ALTER TABLE replay_control.outbox ADD COLUMN partition_key TEXT;

-- How many partitions the stream is spread over. One row, written by the
-- first worker, publish or apply that checked it, and changed only offline
-- (README, "Partitions"); every process started with
-- another count refuses to run, so keys are never re-sharded under
-- running workers. Control plane: a restore leaves it alone.
CREATE TABLE replay_control.partitioning (
    singleton  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    partitions SMALLINT    NOT NULL CHECK (partitions BETWEEN 1 AND 64),
    since      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Events that arrived without a partition key, per partition (they all
-- land in the one partition the hash of no key picks): counted, never
-- dropped. Raised in the transaction that records them.
CREATE TABLE replay_control.unkeyed_events (
    partition_index SMALLINT PRIMARY KEY,
    events          BIGINT      NOT NULL DEFAULT 0,
    last_seen_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- An emergency stop keeps, with each event it saves across the restore, the
-- key and the partition it belongs to, so the event is put back where its
-- key is applied.
ALTER TABLE replay_control.emergency_saved_events
    ADD COLUMN partition_key   TEXT,
    ADD COLUMN partition_index SMALLINT NOT NULL DEFAULT 0;
