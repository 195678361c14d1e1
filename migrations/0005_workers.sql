-- Every worker's last word: who and where it is, and whether it is taking
-- work. Control plane: survives a restore of the domain.
CREATE TABLE replay_control.worker_heartbeats (
    worker_id  TEXT        PRIMARY KEY,
    host       TEXT        NOT NULL,
    pid        INTEGER     NOT NULL,
    state      TEXT        NOT NULL CHECK (state IN ('running', 'paused', 'stopped')),
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A pause or a resume reaches listening workers at once; they also poll the
-- table, since a notification sent while they were disconnected is lost.
CREATE FUNCTION replay_control.pause_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('replay_pause', TG_OP);
    RETURN NULL;
END;
$$;

CREATE TRIGGER pause_changed
    AFTER INSERT OR DELETE ON replay_control.pause
    FOR EACH STATEMENT EXECUTE FUNCTION replay_control.pause_notify();
