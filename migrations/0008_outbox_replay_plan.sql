-- `replay apply` keeps the events it could not get confirmed in the outbox
-- too; they must be relayed with their plan's `x-replay-plan` header (so they
-- take their parked rows), and an emergency stop must be able to drop them.
-- IF NOT EXISTS: the control schema is outside every dump, so a restore of
-- an older backup brings back a migration history without this step while
-- the column is still here.
ALTER TABLE replay_control.outbox ADD COLUMN IF NOT EXISTS replay_plan TEXT;
CREATE INDEX IF NOT EXISTS outbox_replay_plan ON replay_control.outbox (replay_plan) WHERE replay_plan IS NOT NULL;
