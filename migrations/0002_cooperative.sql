-- The reference domain: a patronage cooperative. Timestamps come from the
-- events (occurred_at), never from now(), so replaying an event rewrites the
-- same values and leaves the tables as they were.
CREATE TABLE members (
    id         UUID PRIMARY KEY,
    joined_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE allocation_periods (
    id         UUID PRIMARY KEY,
    start_date DATE        NOT NULL,
    end_date   DATE        NOT NULL CHECK (end_date >= start_date),
    status     TEXT        NOT NULL CHECK (status IN ('open', 'closed')),
    opened_at  TIMESTAMPTZ NOT NULL,
    closed_at  TIMESTAMPTZ
);
CREATE INDEX allocation_periods_status_end_idx ON allocation_periods (status, end_date);

-- No foreign keys here, on purpose: contributions are the bulk of the traffic
-- and the per-row RI triggers cost half of their insert. The
-- contribution.submitted handler inserts only rows whose period exists and
-- inserts their members in the same statement.
CREATE TABLE contributions (
    id               UUID PRIMARY KEY,
    member_id        UUID          NOT NULL,
    period_id        UUID          NOT NULL,
    kind             TEXT          NOT NULL,
    amount           NUMERIC(14,2) NOT NULL CHECK (amount >= 0),
    status           TEXT          NOT NULL CHECK (status IN ('submitted', 'approved', 'rejected')),
    rejection_reason TEXT,
    submitted_at     TIMESTAMPTZ   NOT NULL,
    decided_at       TIMESTAMPTZ
);
CREATE INDEX contributions_period_member_idx ON contributions (period_id, member_id);

CREATE TABLE allocations (
    id            UUID PRIMARY KEY,
    member_id     UUID          NOT NULL REFERENCES members (id),
    period_id     UUID          NOT NULL REFERENCES allocation_periods (id),
    amount        NUMERIC(14,2) NOT NULL,
    -- pending: reset by a replay, waiting for its recomputation.
    status        TEXT          NOT NULL CHECK (status IN ('calculated', 'pending', 'distributed', 'paid')),
    calculated_at TIMESTAMPTZ   NOT NULL,
    distributed_at TIMESTAMPTZ,
    UNIQUE (member_id, period_id)
);

CREATE TABLE payments (
    id            UUID PRIMARY KEY,
    allocation_id UUID          NOT NULL REFERENCES allocations (id),
    amount        NUMERIC(14,2) NOT NULL,
    status        TEXT          NOT NULL CHECK (status IN ('initiated', 'completed')),
    initiated_at  TIMESTAMPTZ   NOT NULL,
    completed_at  TIMESTAMPTZ
);

-- Stands for the payment provider: one row per call that left the database.
-- The payment id is the idempotency key a real provider would be given.
CREATE TABLE provider_calls (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id UUID          NOT NULL UNIQUE,
    amount     NUMERIC(14,2) NOT NULL,
    called_at  TIMESTAMPTZ   NOT NULL DEFAULT now()
);
