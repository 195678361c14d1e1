-- A canary apply's halt, kept on its run until the same apply runs again:
-- what `replay status`, the console and the API show as the run's state
-- (`halted`, with why) instead of the phase it stopped in.
ALTER TABLE replay_control.replay_runs
    ADD COLUMN halted_at TIMESTAMPTZ,
    ADD COLUMN halted_reason TEXT;
