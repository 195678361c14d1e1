-- `replay apply` keeps the events it could not get confirmed in the outbox
-- too; they must be relayed with their plan's `x-replay-plan` header (so they
-- take their parked rows), and an emergency stop must be able to drop them.
ALTER TABLE replay_control.outbox ADD COLUMN replay_plan TEXT;
CREATE INDEX outbox_replay_plan ON replay_control.outbox (replay_plan) WHERE replay_plan IS NOT NULL;
