-- Why each ledger row was replayed: which plan and operator reset it, and
-- what it was before (status, error, retries), so a replay never erases why
-- an event failed. A row a workflow added (a trigger event) has no prior state.
-- It sits beside the ledger, not in the control plane: restoring a pre-replay
-- backup rewinds both together.
CREATE TABLE replay_history (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id           TEXT        NOT NULL,
    plan_id            UUID        NOT NULL,
    operator           TEXT        NOT NULL,
    reset_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    prior_status       TEXT,
    prior_error        TEXT,
    prior_retry_count  INTEGER,
    prior_processed_at TIMESTAMPTZ
);
CREATE INDEX replay_history_event_idx ON replay_history (event_id);
CREATE INDEX replay_history_plan_idx ON replay_history (plan_id);

-- A row reset by a replay waits, parked, for its republished message: the
-- message of this plan takes it at once, while claimers leave it alone until
-- next_attempt_at (the plan's fallback time), so --rate paces the replay and a
-- lost message still gets its row processed. Cleared when the row is settled.
ALTER TABLE processed_events ADD COLUMN replay_plan UUID;

-- A parked row needs no wake-up: its message is on its way.
DROP TRIGGER processed_events_pending_notify ON processed_events;
CREATE TRIGGER processed_events_pending_notify
    AFTER INSERT OR UPDATE OF status ON processed_events
    FOR EACH ROW WHEN (NEW.status = 'pending' AND NEW.replay_plan IS NULL)
    EXECUTE FUNCTION processed_events_notify_pending();

-- Control plane: survives a restore of the domain (backups leave this schema out).

-- The pause: while its row exists, workers take no work and `replay apply`
-- refuses to start (or stops publishing).
CREATE TABLE replay_control.pause (
    singleton BOOLEAN     PRIMARY KEY DEFAULT true CHECK (singleton),
    paused_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    operator  TEXT        NOT NULL,
    reason    TEXT        NOT NULL
);

-- One row per applied plan: what was done once (backup, audit entry, reset)
-- and how far the republish got, so running `apply` again resumes.
CREATE TABLE replay_control.replay_runs (
    plan_id     UUID        PRIMARY KEY,
    digest      TEXT        NOT NULL,
    operator    TEXT        NOT NULL,
    backup_path TEXT        NOT NULL,
    audit_id    BIGINT      NOT NULL,
    events      BIGINT      NOT NULL,
    published   BIGINT      NOT NULL DEFAULT 0,
    state       TEXT        NOT NULL DEFAULT 'publishing'
        CHECK (state IN ('publishing', 'done', 'stopped')),
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ
);

-- Plans list rows in event-time order with the id breaking ties: an index in
-- exactly that order lets a million-row plan stream without a sort.
DROP INDEX processed_events_occurred_at_idx;
CREATE INDEX processed_events_occurred_at_idx ON processed_events (occurred_at, id);

-- A row reset for a replay (pending, processed_at NULL) costs no entry in
-- these two indexes, and the reset of a large plan is mostly index
-- maintenance. Queries lose nothing: processing-time ranges never match NULL,
-- status selections other than `pending` still use the first index (the
-- planner proves `status = 'error'` implies the predicate), and pending rows
-- are found through processed_events_due_idx.
DROP INDEX processed_events_status_processed_at_idx;
CREATE INDEX processed_events_status_processed_at_idx ON processed_events (status, processed_at)
    WHERE status <> 'pending';
DROP INDEX processed_events_processed_at_idx;
CREATE INDEX processed_events_processed_at_idx ON processed_events (processed_at)
    WHERE processed_at IS NOT NULL;
