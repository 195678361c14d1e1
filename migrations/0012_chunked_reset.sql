-- An apply resets its rows in chunks, each its own short transaction, behind
-- a first one that writes the audit entry and the run record: a run is
-- 'resetting' until its last chunk commits, and records how far the reset
-- got (rows of the plan, in plan order) and how many of those rows had
-- changed since the plan was checked and were left alone. A re-run resumes
-- the reset from there, with no second backup or audit entry.
ALTER TABLE replay_control.replay_runs
    ADD COLUMN reset_rows BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN stale_rows BIGINT NOT NULL DEFAULT 0,
    DROP CONSTRAINT replay_runs_state_check,
    ADD CONSTRAINT replay_runs_state_check CHECK (state IN ('resetting', 'publishing', 'done', 'stopped'));
