-- Events `replay publish` could not get confirmed by the broker: kept here,
-- durably, and relayed by the workers once the broker is back. Control plane:
-- a restore of the domain must not erase traffic that has not been sent yet.
CREATE TABLE replay_control.outbox (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    TEXT        NOT NULL UNIQUE,
    event_type  TEXT        NOT NULL,
    payload     JSONB       NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL,
    enqueued_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    reason      TEXT        NOT NULL
);
