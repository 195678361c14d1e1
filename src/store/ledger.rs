//! The ledger, `processed_events`: every event ever seen and what became of it.
//! All SQL on that table lives here.
//!
//! Statuses: `pending` (waiting, or waiting for a retry at `next_attempt_at`),
//! `processing` (claimed by `locked_by` until its lease, `next_attempt_at`,
//! expires), `processed`, `error` (attempts exhausted or payload unusable: the
//! dead-letter state), `skipped` (no handler for its type).

use super::{failed, StoreError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, Row};

use crate::replay::selector::Selector;
use crate::wire::envelope::{Event, Rejection};

/// A ledger row's status, stored as its lowercase name (the table's CHECK
/// constraint lists the same five).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, sqlx::Type, serde::Serialize, serde::Deserialize,
)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Processing,
    Processed,
    Error,
    Skipped,
}

impl Status {
    /// Every status, in the order a row moves through them.
    pub const ALL: [Status; 5] = [Self::Pending, Self::Processing, Self::Processed, Self::Error, Self::Skipped];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Processed => "processed",
            Self::Error => "error",
            Self::Skipped => "skipped",
        }
    }

    /// Reads a status by its name, as an operator types it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
fn never() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(253_402_214_400, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Inserts the events not yet in the ledger and returns `(id, event_id)` of
/// the ones it inserted; events already present are left untouched. Rows get
/// their ids in the order given (delivery order): the ledger id is the
/// partition's apply order.
pub async fn insert_new(conn: &mut PgConnection, rows: &[Admission<'_>]) -> Result<Vec<(i64, String)>, StoreError> {
    let mut ids = Vec::with_capacity(rows.len());
    let mut types = Vec::with_capacity(rows.len());
    let mut payloads = Vec::with_capacity(rows.len());
    let mut times = Vec::with_capacity(rows.len());
    let mut statuses = Vec::with_capacity(rows.len());
    let mut notes = Vec::with_capacity(rows.len());
    for row in rows {
        ids.push(row.event.event_id.as_str());
        types.push(row.event.event_type.as_str());
        payloads.push(row.event.payload_json.as_str());
        times.push(row.event.occurred_at);
        statuses.push(row.status.as_str());
        notes.push(row.note.as_deref());
    }
    sqlx::query_as(
        "INSERT INTO processed_events
                (event_id, event_type, payload, occurred_at, status, error_message, processed_at)
         SELECT e.event_id, e.event_type, e.payload::jsonb, e.occurred_at, e.status, e.note, now()
           FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[])
                WITH ORDINALITY AS e(event_id, event_type, payload, occurred_at, status, note, position)
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
    .fetch_all(conn)
    .await
    .map_err(failed("insert new events"))
}

/// Takes, inside the caller's transaction, the rows of `events` that are due
/// (`pending` and past `next_attempt_at`: a row an operator reset), or parked
/// for the replay plan the message belongs to (its republished message).
/// Rows processed, failed, or held by another worker are not returned: their
/// message is a duplicate.
pub async fn take_due(conn: &mut PgConnection, events: &[&Event], worker: &str) -> Result<Vec<Claimed>, StoreError> {
    let event_ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let plans: Vec<Option<String>> = events.iter().map(|e| e.replay_plan.map(|p| p.to_string())).collect();
    let rows: Vec<ClaimedRow> = sqlx::query_as(
        "UPDATE processed_events p
            SET status = 'processing', locked_by = $3, updated_at = now()
           FROM unnest($1::text[], $2::text[]) AS m(event_id, plan)
          WHERE p.event_id = m.event_id AND p.status = 'pending'
            AND (p.next_attempt_at <= now() OR p.replay_plan::text = m.plan)
          RETURNING p.id, p.event_id, p.event_type, p.payload, p.occurred_at, p.retry_count, p.replay_forced_by",
    )
    .bind(&event_ids)
    .bind(&plans)
    .bind(worker)
    .fetch_all(conn)
    .await
    .map_err(failed("take due rows"))?;
    Ok(rows.into_iter().filter_map(ClaimedRow::into_claimed).collect())
}

/// Claims up to `limit` due rows (pending and due, or processing with an
/// expired lease) for `worker`, and commits the claim: the rows read
/// `processing` until settled or until `lease` runs out. Several workers
/// never claim the same row (`FOR UPDATE SKIP LOCKED`). A reclaimed lease
/// counts as a failed attempt, so an event that kills its worker every time
/// still ends in `error`.
pub async fn claim_due(
    conn: &mut PgConnection,
    worker: &str,
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
                  WHERE status IN ('pending', 'processing') AND next_attempt_at <= now()
                  ORDER BY next_attempt_at, id
                  LIMIT $2
                  FOR UPDATE SKIP LOCKED) due
          WHERE p.id = due.id
          RETURNING p.id, p.event_id, p.event_type, p.payload, p.occurred_at, p.retry_count, p.replay_forced_by",
    )
    .bind(worker)
    .bind(limit)
    .bind(lease.as_secs_f64())
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

/// Locks, inside the caller's transaction, up to `limit` rows that wait for
/// a dependency (`waiting`), oldest first, so the batch can try them before
/// anything published after them.
pub async fn lock_waiting(conn: &mut PgConnection, limit: i64) -> Result<Vec<Claimed>, StoreError> {
    let rows: Vec<ClaimedRow> = sqlx::query_as(
        "SELECT id, event_id, event_type, payload, occurred_at, retry_count, replay_forced_by FROM processed_events
          WHERE sequence_state = 'waiting' AND status = 'pending'
          ORDER BY id
          LIMIT $1
          FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(failed("lock waiting rows"))?;
    Ok(rows.into_iter().filter_map(ClaimedRow::into_claimed).collect())
}

/// Gives a partition's new active worker the leases the previous one held:
/// only the active worker applies a partition's rows, so a `processing`
/// row can only be a dead or fenced-off leader's, and waiting out its
/// lease would only delay failover. Returns how many were taken back.
pub async fn expire_leases(conn: &mut PgConnection) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE processed_events SET next_attempt_at = now()
          WHERE status = 'processing' AND next_attempt_at > now()",
    )
    .execute(conn)
    .await
    .map_err(failed("expire the previous leader's leases"))?;
    Ok(done.rows_affected())
}

/// A ledger row as an operator reads it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct LedgerRow {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub payload: Value,
    pub occurred_at: DateTime<Utc>,
    pub status: Status,
    pub retry_count: i32,
    pub error_message: Option<String>,
    pub processed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// The rows a selector picks, in `order`. Only the conditions the selector
/// uses are written into the query, so the planner sees each one and picks
/// its index; every value is a bind parameter.
pub async fn select(pool: &PgPool, selector: &Selector, order: Order) -> Result<Vec<LedgerRow>, StoreError> {
    let mut query = selection(
        "SELECT id, event_id, event_type, payload, occurred_at, status, retry_count, error_message, \
         processed_at, updated_at FROM processed_events",
        selector,
        order,
    );
    query.build_query_as().fetch_all(pool).await.map_err(failed("select rows"))
}

/// How selected rows are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Event time, then id: replay order.
    EventTime,
    /// Latest received first: what an operator looking around wants.
    NewestFirst,
}

/// `columns` (a SELECT ... FROM processed_events) restricted by a selector.
fn selection(columns: &'static str, selector: &Selector, order: Order) -> QueryBuilder<Postgres> {
    let mut query = QueryBuilder::<Postgres>::new(columns);
    query.push(" WHERE true");
    if !selector.event_ids.is_empty() {
        query.push(" AND event_id = ANY(").push_bind(&selector.event_ids).push(")");
    }
    if !selector.event_types.is_empty() {
        query.push(" AND event_type = ANY(").push_bind(&selector.event_types).push(")");
    }
    for (column, range) in [("occurred_at", &selector.occurred), ("processed_at", &selector.processed)] {
        if let Some(from) = range.from {
            query.push(format_args!(" AND {column} >= ")).push_bind(from);
        }
        if let Some(to) = range.to {
            query.push(format_args!(" AND {column} < ")).push_bind(to);
        }
    }
    if !selector.statuses.is_empty() {
        let statuses: Vec<&str> = selector.statuses.iter().map(|s| s.as_str()).collect();
        query.push(" AND status = ANY(").push_bind(statuses).push(")");
    }
    if let Some(from) = selector.received_from {
        query.push(" AND received_at >= ").push_bind(from);
    }
    for field in &selector.payload {
        let mut alternatives = query.push(" AND (").separated(" OR ");
        for document in field.containments() {
            alternatives.push("payload @> ").push_bind_unseparated(document);
        }
        query.push(")");
    }
    query.push(match order {
        Order::EventTime => " ORDER BY occurred_at, id",
        Order::NewestFirst => " ORDER BY id DESC",
    });
    if let Some(limit) = selector.limit {
        query.push(" LIMIT ").push_bind(limit);
    }
    query
}

/// A selected row as a plan records it, borrowed from the result row.
#[derive(Debug, Clone, Copy)]
pub struct SelectedRow<'r> {
    pub id: i64,
    pub event_id: &'r str,
    pub event_type: &'r str,
    pub status: &'r str,
    pub occurred_at: DateTime<Utc>,
    /// The row version (`xmin`): changes with every change to the row.
    pub version: &'r str,
}

/// Streams the rows a selector picks to `each`, in event-time order, without
/// holding them in memory. Every value is a bind parameter. Columns are read
/// by position and borrowed: a million rows cost no allocation each.
pub async fn for_each_selected<E: From<StoreError>>(
    pool: &PgPool,
    selector: &Selector,
    mut each: impl FnMut(SelectedRow<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let mut query = selection(
        "SELECT id, event_id, event_type, status, occurred_at, xmin::text FROM processed_events",
        selector,
        Order::EventTime,
    );
    let mut rows = query.build().fetch(pool);
    let decode = |source| StoreError { op: "read selected rows", source };
    while let Some(row) = rows.try_next().await.map_err(failed("select rows"))? {
        let selected = SelectedRow {
            id: row.try_get_unchecked(0).map_err(decode)?,
            event_id: row.try_get_unchecked(1).map_err(decode)?,
            event_type: row.try_get_unchecked(2).map_err(decode)?,
            status: row.try_get_unchecked(3).map_err(decode)?,
            occurred_at: row.try_get_unchecked(4).map_err(decode)?,
            version: row.try_get_unchecked(5).map_err(decode)?,
        };
        each(selected)?;
    }
    Ok(())
}

/// The current version of each row among `ids` that still exists, as `(id, version)`.
pub async fn versions(conn: &mut PgConnection, ids: &[i64]) -> Result<Vec<(i64, String)>, StoreError> {
    sqlx::query_as("SELECT id, xmin::text FROM processed_events WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(conn)
        .await
        .map_err(failed("read row versions"))
}

/// Resets rows for a replay plan, inside the caller's transaction, each only
/// if it is still at the version planned (`rows` are `(id, version)`); returns
/// how many were reset, so fewer than asked means the plan is stale. Each
/// row's prior status, error and retry count go to `replay_history`, then the
/// row becomes `pending` with a clean slate, parked for the plan: its
/// republished message takes it (so `--rate` paces the replay, not the
/// claimers), and only if no message came by `fallback` does a claimer.
///
/// One statement and no separate locking pass: the UPDATE locks each row as
/// it writes it and re-checks the version of a row changed meanwhile, so the
/// prior state recorded is the state it replaced.
pub async fn reset_for_plan(
    conn: &mut PgConnection,
    rows: &[(i64, String)],
    plan_id: uuid::Uuid,
    operator: &str,
    fallback: DateTime<Utc>,
    forced: bool,
) -> Result<u64, StoreError> {
    let (ids, versions): (Vec<i64>, Vec<&str>) = rows.iter().map(|(id, v)| (*id, v.as_str())).unzip();
    let reset: i64 = sqlx::query_scalar(
        "WITH reset AS (
             UPDATE processed_events p
                SET status = 'pending', retry_count = 0, error_message = NULL, processed_at = NULL,
                    locked_by = NULL, replay_plan = $3, next_attempt_at = $5, resolved_at = NULL,
                    resolved_note = NULL, updated_at = now(), replay_forced_by = CASE WHEN $6 THEN $3 END
               FROM (SELECT o.id, o.status, o.error_message, o.retry_count, o.processed_at, v.version
                       FROM unnest($1::bigint[], $2::text[]) AS v(id, version)
                       JOIN processed_events o ON o.id = v.id) prior
              WHERE p.id = prior.id AND p.xmin::text = prior.version
          RETURNING p.id, p.event_id, prior.status, prior.error_message, prior.retry_count, prior.processed_at
         ), history AS (
             INSERT INTO replay_history
                    (ledger_id, event_id, plan_id, operator, prior_status, prior_error, prior_retry_count, prior_processed_at)
             SELECT id, event_id, $3, $4, status, error_message, retry_count, processed_at FROM reset
         )
         SELECT count(*) FROM reset",
    )
    .bind(&ids)
    .bind(&versions)
    .bind(plan_id)
    .bind(operator)
    .bind(fallback)
    .bind(forced)
    .fetch_one(conn)
    .await
    .map_err(failed("reset rows for a replay"))?;
    Ok(reset as u64)
}

/// Adds a workflow's trigger events to the ledger as pending rows parked
/// for the plan (see [`reset_for_plan`]), with a history entry that has no
/// prior state. Ids already present are left alone.
pub async fn insert_triggers(
    conn: &mut PgConnection,
    events: &[Event],
    plan_id: uuid::Uuid,
    operator: &str,
    fallback: DateTime<Utc>,
) -> Result<(), StoreError> {
    for event in events {
        sqlx::query(
            "WITH added AS (
                 INSERT INTO processed_events
                        (event_id, event_type, payload, occurred_at, status, replay_plan, next_attempt_at)
                 VALUES ($1, $2, $3::jsonb, $4, 'pending', $5, $7)
                 ON CONFLICT (event_id) DO NOTHING
                 RETURNING id, event_id
             )
             INSERT INTO replay_history (ledger_id, event_id, plan_id, operator) SELECT id, event_id, $5, $6 FROM added",
        )
        .bind(&event.event_id)
        .bind(&event.event_type)
        .bind(&event.payload_json)
        .bind(event.occurred_at)
        .bind(plan_id)
        .bind(operator)
        .bind(fallback)
        .execute(&mut *conn)
        .await
        .map_err(failed("add workflow trigger events"))?;
    }
    Ok(())
}

/// Events first seen at or after `since`, except the ones a replay plan reset
/// or added: what a restore of a backup taken at `since` would erase and an
/// emergency stop must keep.
pub async fn first_seen_since(
    pool: &PgPool,
    since: DateTime<Utc>,
    except_plan: Option<uuid::Uuid>,
) -> Result<Vec<Event>, StoreError> {
    let rows: Vec<ClaimedRow> = sqlx::query_as(
        "SELECT id, event_id, event_type, payload, occurred_at, retry_count FROM processed_events p
          WHERE received_at >= $1
            AND NOT EXISTS (SELECT 1 FROM replay_history h WHERE h.ledger_id = p.id AND h.plan_id = $2)
          ORDER BY id",
    )
    .bind(since)
    .bind(except_plan)
    .fetch_all(pool)
    .await
    .map_err(failed("read events first seen since the backup"))?;
    Ok(rows.into_iter().filter_map(ClaimedRow::into_claimed).map(|c| c.event).collect())
}

/// Adds events as `pending` rows, due now; ids already in the ledger are
/// left as they are. Returns how many were added.
pub async fn insert_pending(conn: &mut PgConnection, events: &[Event]) -> Result<u64, StoreError> {
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let payloads: Vec<&str> = events.iter().map(|e| e.payload_json.as_str()).collect();
    let times: Vec<DateTime<Utc>> = events.iter().map(|e| e.occurred_at).collect();
    let done = sqlx::query(
        "INSERT INTO processed_events (event_id, event_type, payload, occurred_at, status)
         SELECT e.event_id, e.event_type, e.payload::jsonb, e.occurred_at, 'pending'
           FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
             AS e(event_id, event_type, payload, occurred_at)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&types)
    .bind(&payloads)
    .bind(&times)
    .execute(conn)
    .await
    .map_err(failed("add pending events"))?;
    Ok(done.rows_affected())
}

/// The events stored for `event_ids`, as they are republished, in the order asked.
pub async fn events(pool: &PgPool, event_ids: &[String]) -> Result<Vec<Event>, StoreError> {
    let rows: Vec<ClaimedRow> = sqlx::query_as(
        "SELECT id, event_id, event_type, payload, occurred_at, retry_count FROM processed_events
          WHERE event_id = ANY($1)",
    )
    .bind(event_ids)
    .fetch_all(pool)
    .await
    .map_err(failed("read events to republish"))?;
    let mut by_id: std::collections::HashMap<String, Event> =
        rows.into_iter().filter_map(ClaimedRow::into_claimed).map(|c| (c.event.event_id.clone(), c.event)).collect();
    Ok(event_ids.iter().filter_map(|id| by_id.remove(id)).collect())
}

/// One ledger row by event id.
pub async fn find(pool: &PgPool, event_id: &str) -> Result<Option<LedgerRow>, StoreError> {
    sqlx::query_as(
        "SELECT id, event_id, event_type, payload, occurred_at, status, retry_count, error_message, \
         processed_at, updated_at FROM processed_events WHERE event_id = $1",
    )
    .bind(event_id)
    .fetch_optional(pool)
    .await
    .map_err(failed("find an event"))
}

/// One reset of a row by a replay plan, and the state it erased.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct ReplayHistory {
    pub plan_id: uuid::Uuid,
    pub operator: String,
    pub reset_at: DateTime<Utc>,
    /// `None` for an event a workflow added.
    pub prior_status: Option<String>,
    pub prior_error: Option<String>,
    pub prior_retry_count: Option<i32>,
    pub prior_processed_at: Option<DateTime<Utc>>,
}

/// An event's replay history, oldest first.
pub async fn history(pool: &PgPool, event_id: &str) -> Result<Vec<ReplayHistory>, StoreError> {
    sqlx::query_as(
        "SELECT plan_id, operator, reset_at, prior_status, prior_error, prior_retry_count, prior_processed_at
           FROM replay_history
          WHERE ledger_id = (SELECT id FROM processed_events WHERE event_id = $1) ORDER BY id",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await
    .map_err(failed("read replay history"))
}

/// Where a plan's rows stand now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanProgress {
    /// Rows still parked for the plan: pending, their message not yet consumed.
    pub waiting: i64,
    /// Every other row of the plan, by status.
    pub by_status: std::collections::BTreeMap<Status, i64>,
}

impl PlanProgress {
    /// Rows settled for good: processed or skipped.
    pub fn done(&self) -> i64 {
        [Status::Processed, Status::Skipped].iter().filter_map(|s| self.by_status.get(s)).sum()
    }

    /// Rows still to be applied: waiting, pending or processing.
    pub fn open(&self) -> i64 {
        self.waiting + [Status::Pending, Status::Processing].iter().filter_map(|s| self.by_status.get(s)).sum::<i64>()
    }
}

pub async fn plan_progress(pool: &PgPool, plan_id: uuid::Uuid) -> Result<PlanProgress, StoreError> {
    let rows: Vec<(Status, bool, i64)> = sqlx::query_as(
        "SELECT p.status, p.status = 'pending' AND p.replay_plan IS NOT DISTINCT FROM $1, count(*)
           FROM replay_history h JOIN processed_events p ON p.id = h.ledger_id
          WHERE h.plan_id = $1
          GROUP BY 1, 2",
    )
    .bind(plan_id)
    .fetch_all(pool)
    .await
    .map_err(failed("count a plan's rows by status"))?;
    let mut progress = PlanProgress::default();
    for (status, waiting, count) in rows {
        if waiting {
            progress.waiting += count;
        } else {
            *progress.by_status.entry(status).or_default() += count;
        }
    }
    Ok(progress)
}

/// Rows of a plan that failed again (or are retrying) with one message.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct FailureGroup {
    pub status: Status,
    pub error: String,
    pub count: i64,
}

/// Errors among a plan's rows since its reset (failed again, or retrying),
/// grouped by message, most frequent first.
pub async fn plan_failures(pool: &PgPool, plan_id: uuid::Uuid) -> Result<Vec<FailureGroup>, StoreError> {
    sqlx::query_as(
        "SELECT p.status, p.error_message AS error, count(*) AS count
           FROM replay_history h JOIN processed_events p ON p.id = h.ledger_id
          WHERE h.plan_id = $1 AND p.error_message IS NOT NULL AND p.status IN ('error', 'pending')
          GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 10",
    )
    .bind(plan_id)
    .fetch_all(pool)
    .await
    .map_err(failed("group a plan's failures"))
}

/// How many rows of one type are in one status.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TypeCount {
    pub event_type: String,
    pub status: Status,
    pub count: i64,
}

/// Counts rows by type and status, for `replay status`.
pub async fn count_by_type_and_status(pool: &PgPool) -> Result<Vec<TypeCount>, StoreError> {
    sqlx::query_as("SELECT event_type, status, count(*) AS count FROM processed_events GROUP BY 1, 2 ORDER BY 1, 2")
        .fetch_all(pool)
        .await
        .map_err(failed("count rows by type and status"))
}

/// A failed event as the DLQ shows it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct FailedEvent {
    pub event_id: String,
    pub event_type: String,
    pub error_message: Option<String>,
    pub retry_count: i32,
    pub failed_at: Option<DateTime<Utc>>,
}

/// Rows in `error` not marked resolved, most recent first.
pub async fn unresolved_errors(pool: &PgPool, limit: i64) -> Result<Vec<FailedEvent>, StoreError> {
    sqlx::query_as(
        "SELECT event_id, event_type, error_message, retry_count, processed_at AS failed_at FROM processed_events
          WHERE status = 'error' AND resolved_at IS NULL ORDER BY processed_at DESC NULLS LAST, id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(failed("list failed events"))
}

/// How many rows are in `error` and not resolved.
pub async fn count_unresolved_errors(pool: &PgPool) -> Result<i64, StoreError> {
    sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE status = 'error' AND resolved_at IS NULL")
        .fetch_one(pool)
        .await
        .map_err(failed("count failed events"))
}

/// Unresolved failures since `since`, grouped by type and error.
pub async fn error_report(pool: &PgPool, since: DateTime<Utc>) -> Result<Vec<super::ReportGroup>, StoreError> {
    sqlx::query_as(
        "SELECT event_type AS what, coalesce(error_message, '') AS why, count(*) AS count,
                min(processed_at) AS first_seen, max(processed_at) AS last_seen
           FROM processed_events
          WHERE status = 'error' AND resolved_at IS NULL AND processed_at >= $1
          GROUP BY 1, 2 ORDER BY 3 DESC, 1",
    )
    .bind(since)
    .fetch_all(pool)
    .await
    .map_err(failed("report failed events"))
}

/// Marks a failed event resolved, inside the caller's transaction; false if
/// no unresolved failed event has that id.
pub async fn resolve_error(conn: &mut PgConnection, event_id: &str, note: &str) -> Result<bool, StoreError> {
    // A resolved failure no longer holds its key: the events held behind it
    // are released (applied without it, as the operator decided).
    let resolved: Option<i64> = sqlx::query_scalar(
        "UPDATE processed_events SET resolved_at = now(), resolved_note = $2, sequence_state = NULL
          WHERE event_id = $1 AND status = 'error' AND resolved_at IS NULL
          RETURNING id",
    )
    .bind(event_id)
    .bind(note)
    .fetch_optional(&mut *conn)
    .await
    .map_err(failed("resolve a failed event"))?;
    match resolved {
        Some(id) => {
            release_held_behind(conn, &[id]).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// A row held behind an earlier event of its sequence key, as the DLQ shows it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct HeldEvent {
    pub event_id: String,
    pub event_type: String,
    pub sequence_key: Option<String>,
    /// The event it waits for.
    pub held_behind: String,
    pub since: DateTime<Utc>,
}

/// Rows held behind an earlier event, oldest first.
pub async fn held(pool: &PgPool, limit: i64) -> Result<Vec<HeldEvent>, StoreError> {
    sqlx::query_as(
        "SELECT p.event_id, p.event_type, p.sequence_key, b.event_id AS held_behind, p.updated_at AS since
           FROM processed_events p JOIN processed_events b ON b.id = p.held_behind
          WHERE p.sequence_state = 'held' ORDER BY p.id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(failed("list held events"))
}

/// How many rows are held behind an earlier event.
pub async fn count_held(pool: &PgPool) -> Result<i64, StoreError> {
    sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE sequence_state = 'held'")
        .fetch_one(pool)
        .await
        .map_err(failed("count held events"))
}

/// Processed rows processed before `before`: what a prune would delete.
pub async fn count_prunable(pool: &PgPool, before: DateTime<Utc>) -> Result<i64, StoreError> {
    sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE status = 'processed' AND processed_at < $1")
        .bind(before)
        .fetch_one(pool)
        .await
        .map_err(failed("count prunable rows"))
}

/// Deletes up to `batch` processed rows processed before `before` (never a
/// row in another status) and returns how many it deleted. Rows locked by
/// someone else are skipped, not waited for. Runs in the caller's transaction,
/// so the audit entry describing the batch commits with it.
pub async fn prune_batch(conn: &mut PgConnection, before: DateTime<Utc>, batch: i64) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM processed_events WHERE id IN (
             SELECT id FROM processed_events
              WHERE status = 'processed' AND processed_at < $1
              ORDER BY processed_at LIMIT $2
              FOR UPDATE SKIP LOCKED)",
    )
    .bind(before)
    .bind(batch)
    .execute(conn)
    .await
    .map_err(failed("prune processed rows"))?;
    Ok(done.rows_affected())
}

/// How the ledger is moving, for health and metrics.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Activity {
    /// When a row was last processed (`None` on an empty ledger).
    pub last_processed_at: Option<DateTime<Utc>>,
    /// How long the oldest due pending row has waited (`None` when none is due).
    pub consumer_lag_seconds: Option<f64>,
    /// Rows a replay reset that still wait for their message.
    pub replay_rows_waiting: i64,
}

pub async fn activity(pool: &PgPool) -> Result<Activity, StoreError> {
    sqlx::query_as(
        "SELECT (SELECT max(processed_at) FROM processed_events WHERE processed_at IS NOT NULL) AS last_processed_at,
                (SELECT extract(epoch FROM now() - min(next_attempt_at))::float8 FROM processed_events
                  WHERE status = 'pending' AND next_attempt_at <= now()) AS consumer_lag_seconds,
                (SELECT count(*) FROM processed_events WHERE status = 'pending' AND replay_plan IS NOT NULL)
                  AS replay_rows_waiting",
    )
    .fetch_one(pool)
    .await
    .map_err(failed("read ledger activity"))
}

/// Counts rows by status, for tests, the benchmark and health.
pub async fn count_by_status(pool: &PgPool) -> Result<Vec<(String, i64)>, StoreError> {
    sqlx::query_as("SELECT status, count(*) FROM processed_events GROUP BY status ORDER BY status")
        .fetch_all(pool)
        .await
        .map_err(failed("count rows by status"))
}

/// The number of rows in the ledger.
pub async fn count(pool: &PgPool) -> Result<i64, StoreError> {
    sqlx::query_scalar("SELECT count(*) FROM processed_events").fetch_one(pool).await.map_err(failed("count rows"))
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: i64,
    event_id: String,
    event_type: String,
    payload: Value,
    occurred_at: DateTime<Utc>,
    retry_count: i32,
    #[sqlx(default)]
    replay_forced_by: Option<uuid::Uuid>,
}

impl ClaimedRow {
    /// A stored payload was storable once, so rebuilding the event cannot be
    /// rejected; if it ever is, the row is left for its lease to expire.
    fn into_claimed(self) -> Option<Claimed> {
        let event = Event::new(self.event_id, self.event_type, self.occurred_at, self.payload)
            .map_err(|e: Rejection| tracing::error!(row = self.id, error = %e, "stored payload cannot be rebuilt"))
            .ok()?;
        let event = Event { forced_by: self.replay_forced_by, ..event };
        Some(Claimed { id: self.id, event, retry_count: self.retry_count })
    }
}
