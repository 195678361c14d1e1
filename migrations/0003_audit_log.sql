-- The control plane lives in its own schema so that a restore of the domain
-- (emergency stop) can leave it out and never erase it.
CREATE SCHEMA IF NOT EXISTS replay_control;

-- Append-only: every operator action, each entry chained to the previous by
-- hash, so an edit or a deletion is detectable (`replay audit verify`).
CREATE TABLE replay_control.audit_log (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL,
    operator   TEXT        NOT NULL,
    action     TEXT        NOT NULL,
    details    JSONB       NOT NULL DEFAULT '{}',
    prev_hash  TEXT        NOT NULL,
    entry_hash TEXT        NOT NULL UNIQUE
);

CREATE FUNCTION replay_control.audit_log_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is refused', TG_OP
        USING HINT = 'Record a new entry instead of changing an old one.';
END;
$$;

CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON replay_control.audit_log
    FOR EACH ROW EXECUTE FUNCTION replay_control.audit_log_refuse_change();

CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON replay_control.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION replay_control.audit_log_refuse_change();
