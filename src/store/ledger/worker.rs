//! The worker's side of the ledger: events entering it, rows claimed and
//! locked, attempts settled, held rows released. Every statement runs on
//! the caller's connection (the leader's session), inside its transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::*;
use crate::store::{failed, StoreError};
use crate::wire::envelope::Event;

/// A new event as it enters the ledger, with the status it starts in.
pub struct Admission<'a> {
    pub event: &'a Event,
    /// `processed` when a handler will apply it in the same transaction (a
    /// failure rewrites it before commit), `skipped` when none exists.
    pub status: Status,
    pub note: Option<String>,
}

/// A ledger row taken for processing.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub event: Event,
    pub retry_count: i32,
}

/// How one event's attempt ended, to be written back.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    Processed,
    Skipped {
        reason: String,
    },
    /// Failed; retried after `retry_at`. `waiting` when it failed only
    /// because a dependency has not arrived (it may be published later): it
    /// then holds nothing behind it.
    Retry {
        error: String,
        retry_at: DateTime<Utc>,
        waiting: bool,
    },
    /// Not applied yet because something it depends on is not visible yet
    /// (most often: committing in a concurrent batch). Tried again at
    /// `until` without counting a failed attempt.
    Held {
        reason: String,
        until: DateTime<Utc>,
    },
    /// Not applied because an earlier event of its sequence key (ledger row
    /// `behind`) is not applied yet; released once that one is.
    HeldBehind {
        behind: i64,
        reason: String,
    },
    /// Failed for good: the dead-letter state. `waiting` when it gave up
    /// waiting for a dependency: that may still be published, so it holds
    /// nothing behind it (else the dependency would wait behind it forever).
    Failed {
        error: String,
        waiting: bool,
    },
}

/// One row's settlement, with the sequence key its event was applied under.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub row_id: i64,
    pub settlement: Settlement,
    pub sequence_key: Option<String>,
}

/// Where a row stands in its sequence once settled (`sequence_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SequenceState {
    /// Waits for a dependency that may come later; holds nothing.
    Waiting,
    /// Not applied: later events of its key are held behind it.
    Blocking,
    /// Held behind an earlier event of its key.
    Held,
}

impl SequenceState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Blocking => "blocking",
            Self::Held => "held",
        }
    }
}

/// When a held row is due: never, until released (`release_held_behind`).
/// A date rather than `infinity`, which chrono cannot read back.
pub(super) fn never() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(253_402_214_400, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A row `insert_new` added: its ledger id and event id.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Inserted {
    pub id: i64,
    pub event_id: String,
}

/// Inserts the events not yet in the ledger, as rows of `partition`, and
/// returns the ones it inserted; events already present are left untouched.
/// Rows get their ids in the order given (delivery order): the ledger id is
/// the partition's apply order.
pub async fn insert_new(
    conn: &mut PgConnection,
    rows: &[Admission<'_>],
    partition: i16,
) -> Result<Vec<Inserted>, StoreError> {
    let mut ids = Vec::with_capacity(rows.len());
    let mut types = Vec::with_capacity(rows.len());
    let mut payloads = Vec::with_capacity(rows.len());
    let mut times = Vec::with_capacity(rows.len());
    let mut statuses = Vec::with_capacity(rows.len());
    let mut notes = Vec::with_capacity(rows.len());
    let mut keys = Vec::with_capacity(rows.len());
    for row in rows {
        ids.push(row.event.event_id.as_str());
        types.push(row.event.event_type.as_str());
        payloads.push(row.event.payload_json.as_str());
        times.push(row.event.occurred_at);
        statuses.push(row.status.as_str());
        notes.push(row.note.as_deref());
        keys.push(row.event.partition_key.as_deref());
    }
    sqlx::query_as(
        "INSERT INTO processed_events
                (event_id, event_type, payload, occurred_at, status, error_message, processed_at, partition_key,
                 partition_index)
         SELECT e.event_id, e.event_type, e.payload::jsonb, e.occurred_at, e.status, e.note, now(), e.partition_key, $8
           FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::text[])
                WITH ORDINALITY AS e(event_id, event_type, payload, occurred_at, status, note, partition_key, position)
          ORDER BY e.position
         ON CONFLICT (event_id) DO NOTHING
         RETURNING id, event_id",
    )
    .bind(&ids)
    .bind(&types)
    .bind(&payloads)
    .bind(&times)
    .bind(&statuses)
    .bind(&notes)
    .bind(&keys)
    .bind(partition)
    .fetch_all(conn)
    .await
    .map_err(failed("insert new events"))
}

/// Takes, inside the caller's transaction, the rows of `events` that are due
/// (`pending` and past `next_attempt_at`: a row an operator reset), or parked
/// for the replay plan the message belongs to (its republished message).
/// Rows processed, failed, or held by another worker are not returned: their
/// message is a duplicate. A row taken becomes `partition`'s: its message
/// came through that partition's queue, where its key is routed now.
pub async fn take_due(
    conn: &mut PgConnection,
    events: &[&Event],
    worker: &str,
    partition: i16,
) -> Result<Vec<Claimed>, StoreError> {
    let event_ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let plans: Vec<Option<String>> = events.iter().map(|e| e.replay_plan.map(|p| p.to_string())).collect();
    let rows: Vec<ClaimedRow> = sqlx::query_as(
        "UPDATE processed_events p
            SET status = 'processing', locked_by = $3, partition_index = $4, updated_at = now()
           FROM unnest($1::text[], $2::text[]) AS m(event_id, plan)
          WHERE p.event_id = m.event_id AND p.status = 'pending'
            AND (p.next_attempt_at <= now() OR p.replay_plan::text = m.plan)
          RETURNING p.id, p.event_id, p.event_type, p.payload, p.occurred_at, p.retry_count, p.replay_forced_by,
                    p.partition_key",
    )
    .bind(&event_ids)
    .bind(&plans)
    .bind(worker)
    .bind(partition)
    .fetch_all(conn)
    .await
    .map_err(failed("take due rows"))?;
    Ok(rows.into_iter().filter_map(ClaimedRow::into_claimed).collect())
}

/// Claims up to `limit` due rows of `partition` (pending and due, or
/// processing with an expired lease) for `worker`, and commits the claim: the rows read
/// `processing` until settled or until `lease` runs out. Several workers
/// never claim the same row (`FOR UPDATE SKIP LOCKED`). A reclaimed lease
/// counts as a failed attempt, so an event that kills its worker every time
/// still ends in `error`.
pub async fn claim_due(
    conn: &mut PgConnection,
    worker: &str,
    partition: i16,
    limit: i64,
    lease: Duration,
) -> Result<Vec<Claimed>, StoreError> {
    let rows: Vec<ClaimedRow> = sqlx::query_as(
        "UPDATE processed_events p
            SET status = 'processing',
                locked_by = $1,
                next_attempt_at = now() + make_interval(secs => $3),
                retry_count = p.retry_count + CASE WHEN p.status = 'processing' THEN 1 ELSE 0 END,
                error_message = CASE WHEN p.status = 'processing'
                                     THEN 'lease of worker ' || COALESCE(p.locked_by, '?') || ' expired before it finished'
                                     ELSE p.error_message END,
                updated_at = now()
           FROM (SELECT id FROM processed_events
                  WHERE status IN ('pending', 'processing') AND partition_index = $4 AND next_attempt_at <= now()
                  ORDER BY next_attempt_at, id
                  LIMIT $2
                  FOR UPDATE SKIP LOCKED) due
          WHERE p.id = due.id
          RETURNING p.id, p.event_id, p.event_type, p.payload, p.occurred_at, p.retry_count, p.replay_forced_by,
                    p.partition_key",
    )
    .bind(worker)
    .bind(limit)
    .bind(lease.as_secs_f64())
    .bind(partition)
    .fetch_all(conn)
    .await
    .map_err(failed("claim due rows"))?;
    Ok(rows.into_iter().filter_map(ClaimedRow::into_claimed).collect())
}

/// Locks, inside the caller's transaction, the claimed rows still held by
/// `worker` and returns their ids; a row whose lease another worker took over
/// is left to that worker.
pub async fn lock_claimed(conn: &mut PgConnection, ids: &[i64], worker: &str) -> Result<Vec<i64>, StoreError> {
    sqlx::query_scalar(
        "SELECT id FROM processed_events
          WHERE id = ANY($1) AND status = 'processing' AND locked_by = $2
          FOR UPDATE",
    )
    .bind(ids)
    .bind(worker)
    .fetch_all(conn)
    .await
    .map_err(failed("lock claimed rows"))
}

/// Writes back how each attempt ended. `retry_count` counts failed
/// attempts. A row settled for good (processed, skipped) releases the rows
/// held behind it: they become due, still blocking their key until applied.
pub async fn settle(conn: &mut PgConnection, settled: &[Settled]) -> Result<(), StoreError> {
    if settled.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(settled.len());
    let mut statuses = Vec::with_capacity(settled.len());
    let mut errors: Vec<Option<&str>> = Vec::with_capacity(settled.len());
    let mut retry_at: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(settled.len());
    let mut failures = Vec::with_capacity(settled.len());
    let mut keys: Vec<Option<&str>> = Vec::with_capacity(settled.len());
    let mut states: Vec<Option<&str>> = Vec::with_capacity(settled.len());
    let mut behind: Vec<Option<i64>> = Vec::with_capacity(settled.len());
    let mut applied = Vec::new();
    for Settled { row_id, settlement, sequence_key } in settled {
        ids.push(*row_id);
        let (status, error, at, is_failure, state, held_behind) = match settlement {
            Settlement::Processed => (Status::Processed, None, None, false, None, None),
            Settlement::Skipped { reason } => (Status::Skipped, Some(reason.as_str()), None, false, None, None),
            Settlement::Retry { error, retry_at, waiting } => {
                let state = if *waiting { SequenceState::Waiting } else { SequenceState::Blocking };
                (Status::Pending, Some(error.as_str()), Some(*retry_at), true, Some(state), None)
            }
            Settlement::Held { reason, until } => {
                (Status::Pending, Some(reason.as_str()), Some(*until), false, Some(SequenceState::Waiting), None)
            }
            Settlement::HeldBehind { behind, reason } => {
                (Status::Pending, Some(reason.as_str()), Some(never()), false, Some(SequenceState::Held), Some(*behind))
            }
            Settlement::Failed { error, waiting: true } => {
                (Status::Error, Some(error.as_str()), None, true, None, None)
            }
            Settlement::Failed { error, waiting: false } => {
                (Status::Error, Some(error.as_str()), None, true, Some(SequenceState::Blocking), None)
            }
        };
        if state.is_none() {
            applied.push(*row_id);
        }
        statuses.push(status.as_str());
        errors.push(error);
        retry_at.push(at);
        failures.push(is_failure);
        keys.push(sequence_key.as_deref());
        states.push(state.map(SequenceState::as_str));
        behind.push(held_behind);
    }
    sqlx::query(
        "UPDATE processed_events p
            SET status = s.status,
                error_message = s.error,
                retry_count = p.retry_count + CASE WHEN s.failed THEN 1 ELSE 0 END,
                next_attempt_at = COALESCE(s.retry_at, p.next_attempt_at),
                processed_at = CASE WHEN s.status = 'pending' THEN NULL ELSE now() END,
                locked_by = NULL,
                replay_plan = NULL,
                replay_forced_by = CASE WHEN s.status = 'pending' THEN p.replay_forced_by END,
                resolved_at = NULL,
                resolved_note = NULL,
                sequence_key = COALESCE(s.sequence_key, p.sequence_key),
                sequence_state = s.state,
                held_behind = s.behind,
                updated_at = now()
           FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::bool[], $6::text[], $7::text[],
                       $8::bigint[])
             AS s(id, status, error, retry_at, failed, sequence_key, state, behind)
          WHERE p.id = s.id",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&errors)
    .bind(&retry_at)
    .bind(&failures)
    .bind(&keys)
    .bind(&states)
    .bind(&behind)
    .execute(&mut *conn)
    .await
    .map_err(failed("settle attempts"))?;
    release_held_behind(conn, &applied).await
}

/// Makes the rows held behind `ids` due now. They stay `blocking`, so an
/// event of their key that arrives before they are applied lines up behind
/// them instead of overtaking.
pub async fn release_held_behind(conn: &mut PgConnection, ids: &[i64]) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE processed_events
            SET sequence_state = 'blocking', held_behind = NULL, next_attempt_at = now(),
                error_message = 'released: the event it was held behind is settled', updated_at = now()
          WHERE held_behind = ANY($1) AND sequence_state = 'held'",
    )
    .bind(ids)
    .execute(conn)
    .await
    .map_err(failed("release held rows"))?;
    Ok(())
}

/// The earliest not-yet-applied row of each of `keys` that later events of
/// the key must wait for (`blocking` or `held`), leaving out `batch` (the
/// rows being applied right now, which the caller orders itself).
pub async fn earliest_blockers(
    conn: &mut PgConnection,
    keys: &[&str],
    batch: &[i64],
) -> Result<std::collections::HashMap<String, Blocker>, StoreError> {
    if keys.is_empty() {
        return Ok(std::collections::HashMap::new());
    }
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT DISTINCT ON (sequence_key) sequence_key, id, event_id FROM processed_events
          WHERE sequence_key = ANY($1) AND sequence_state IN ('blocking', 'held') AND NOT (id = ANY($2))
          ORDER BY sequence_key, id",
    )
    .bind(keys)
    .bind(batch)
    .fetch_all(conn)
    .await
    .map_err(failed("find blocking rows"))?;
    Ok(rows.into_iter().map(|(key, row_id, event_id)| (key, Blocker { row_id, event_id })).collect())
}

/// An earlier event that later events of its key wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    pub row_id: i64,
    pub event_id: String,
}

/// Locks, inside the caller's transaction, up to `limit` rows of
/// `partition` that wait for a dependency (`waiting`), oldest first, so the
/// batch can try them before anything published after them.
pub async fn lock_waiting(conn: &mut PgConnection, partition: i16, limit: i64) -> Result<Vec<Claimed>, StoreError> {
    let rows: Vec<ClaimedRow> = sqlx::query_as(
        "SELECT id, event_id, event_type, payload, occurred_at, retry_count, replay_forced_by, partition_key
           FROM processed_events
          WHERE sequence_state = 'waiting' AND status = 'pending' AND partition_index = $2
          ORDER BY partition_index, id
          LIMIT $1
          FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .bind(partition)
    .fetch_all(conn)
    .await
    .map_err(failed("lock waiting rows"))?;
    Ok(rows.into_iter().filter_map(ClaimedRow::into_claimed).collect())
}

/// Gives a partition's new active worker the leases the previous one held
/// (rows of `partition` only: another partition's leader may be alive):
/// only the active worker applies a partition's rows, so a `processing`
/// row can only be a dead or fenced-off leader's, and waiting out its
/// lease would only delay failover. Returns how many were taken back.
pub async fn expire_leases(conn: &mut PgConnection, partition: i16) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE processed_events SET next_attempt_at = now()
          WHERE status = 'processing' AND partition_index = $1 AND next_attempt_at > now()",
    )
    .bind(partition)
    .execute(conn)
    .await
    .map_err(failed("expire the previous leader's leases"))?;
    Ok(done.rows_affected())
}
