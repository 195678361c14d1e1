-- Tokens of the console and its HTTP API. Only the SHA-256 of a token is
-- kept: the token itself is printed once, by `replay token create`. Control
-- plane, so a restore of the domain never revokes or revives one.
CREATE TABLE replay_control.api_tokens (
    -- What the audit log records as the operator of every write made with it.
    name         TEXT        PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    role         TEXT        NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    token_sha256 TEXT        NOT NULL UNIQUE CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    created_by   TEXT        NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A revoked token is kept (its name is never reused) so the audit log's
    -- operators stay unambiguous.
    revoked_at   TIMESTAMPTZ
);
