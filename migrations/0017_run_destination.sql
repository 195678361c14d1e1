-- A destination replay (`replay plan --destination queue:NAME`) publishes
-- to one subscriber's queue and takes no backup: its run says where its
-- events went, so the emergency stop purges that queue and restores nothing.
-- NULL for every run to our own workers.
ALTER TABLE replay_control.replay_runs ADD COLUMN destination TEXT;
