-- `replay plan --force`: a forced replay skips the handlers' idempotency
-- guards, as the runbook's "delete the idempotency record" did. The reset
-- marks each row with the forcing plan; the mark survives retries and is
-- cleared once the row is settled for good.
ALTER TABLE processed_events ADD COLUMN replay_forced_by UUID;

-- The provider is called once per payment, and once more per forced replay
-- of its payment.initiated (each forced plan at most once).
ALTER TABLE provider_calls ADD COLUMN forced_by_plan UUID;
ALTER TABLE provider_calls DROP CONSTRAINT provider_calls_payment_id_key;
CREATE UNIQUE INDEX provider_calls_once ON provider_calls (payment_id) WHERE forced_by_plan IS NULL;
CREATE UNIQUE INDEX provider_calls_forced_once ON provider_calls (payment_id, forced_by_plan)
    WHERE forced_by_plan IS NOT NULL;
