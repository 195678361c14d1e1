-- The two-person rule (`replay console --require-approval`): who approved a
-- plan, and which sealed file (its digest) they approved. One approval per
-- plan. Control plane, so a restore of the domain never forgets or invents
-- an approval.
CREATE TABLE replay_control.plan_approvals (
    plan_id     UUID        PRIMARY KEY,
    -- The plan file's digest when it was approved: an approval holds for
    -- that file only.
    plan_digest TEXT        NOT NULL,
    -- The approving token's name (never the plan's maker).
    approved_by TEXT        NOT NULL,
    approved_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
