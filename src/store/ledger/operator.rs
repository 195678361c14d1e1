//! What operators read and do on the ledger: listing and finding events,
//! the DLQ's failed events, held events, counts for `replay status`,
//! health and metrics, pruning.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use super::*;
use crate::replay::selector::Selector;
use crate::store::{failed, StoreError};

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
    let mut query = selection(Reading::Rows.columns(), selector, order);
    query.build_query_as().fetch_all(pool).await.map_err(failed("select rows"))
}

/// The planner's plan (`EXPLAIN (FORMAT JSON)`) of the very statement
/// `select` (`Reading::Rows`) or `for_each_selected` (`Reading::Plan`) runs
/// for `selector`, values bound as they would be: how a test proves every
/// selector is served by an index on a ledger large enough for the planner
/// to care.
pub async fn explain_selection(
    pool: &PgPool,
    selector: &Selector,
    order: Order,
    reading: Reading,
) -> Result<Value, StoreError> {
    let mut query = selection(&format!("EXPLAIN (FORMAT JSON) {}", reading.columns()), selector, order);
    let plan: (Value,) = query.build_query_as().fetch_one(pool).await.map_err(failed("explain a selection"))?;
    Ok(plan.0)
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

/// `unresolved_errors`' statement (`$1`: the limit); public so a test can EXPLAIN it.
pub const UNRESOLVED_ERRORS_SQL: &str =
    "SELECT event_id, event_type, error_message, retry_count, processed_at AS failed_at FROM processed_events
          WHERE status = 'error' AND resolved_at IS NULL ORDER BY processed_at DESC NULLS LAST, id DESC LIMIT $1";

/// Rows in `error` not marked resolved, most recent first.
pub async fn unresolved_errors(pool: &PgPool, limit: i64) -> Result<Vec<FailedEvent>, StoreError> {
    sqlx::query_as(UNRESOLVED_ERRORS_SQL).bind(limit).fetch_all(pool).await.map_err(failed("list failed events"))
}

/// How many rows are in `error` and not resolved.
pub async fn count_unresolved_errors(pool: &PgPool) -> Result<i64, StoreError> {
    sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE status = 'error' AND resolved_at IS NULL")
        .fetch_one(pool)
        .await
        .map_err(failed("count failed events"))
}

/// `error_report`'s statement, the runbook's "failed events in the last 24 h"
/// (`$1`: since); public so a test can EXPLAIN it.
pub const ERROR_REPORT_SQL: &str = concat!(
    "SELECT event_type AS what, ",
    normalized_error!(),
    " AS why, count(*) AS count,
                    min(processed_at) AS first_seen, max(processed_at) AS last_seen
               FROM processed_events
              WHERE status = 'error' AND resolved_at IS NULL AND processed_at >= $1
              GROUP BY 1, 2 ORDER BY 3 DESC, 1"
);

/// Unresolved failed events since `since`, by type and normalized error.
pub async fn error_report(pool: &PgPool, since: DateTime<Utc>) -> Result<Vec<crate::store::ReportGroup>, StoreError> {
    sqlx::query_as(ERROR_REPORT_SQL).bind(since).fetch_all(pool).await.map_err(failed("report failed events"))
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

/// Marks every unresolved failed event of `event_type` whose normalized
/// error is `error` (as [`error_report`] groups them) resolved, inside the
/// caller's transaction, releasing what each held; returns how many.
pub async fn resolve_error_group(
    conn: &mut PgConnection,
    event_type: &str,
    error: &str,
    note: &str,
) -> Result<u64, StoreError> {
    let ids: Vec<i64> = sqlx::query_scalar(concat!(
        "UPDATE processed_events SET resolved_at = now(), resolved_note = $3, sequence_state = NULL
          WHERE status = 'error' AND resolved_at IS NULL AND event_type = $1 AND ",
        normalized_error!(),
        " = $2 RETURNING id"
    ))
    .bind(event_type)
    .bind(error)
    .bind(note)
    .fetch_all(&mut *conn)
    .await
    .map_err(failed("resolve a group of failed events"))?;
    release_held_behind(conn, &ids).await?;
    Ok(ids.len() as u64)
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

/// Rows not settled yet (`pending` or `processing`): each belongs to its
/// partition's claimer, so the partition count may not change under them.
pub async fn count_unsettled(pool: &PgPool) -> Result<i64, StoreError> {
    sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE status IN ('pending', 'processing')")
        .fetch_one(pool)
        .await
        .map_err(failed("count unsettled rows"))
}

/// Processed rows processed before `before`: what a prune would delete.
pub async fn count_prunable(pool: &PgPool, before: DateTime<Utc>) -> Result<i64, StoreError> {
    sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE status = 'processed' AND processed_at < $1")
        .bind(before)
        .fetch_one(pool)
        .await
        .map_err(failed("count prunable rows"))
}

/// `prune_batch`'s statement (`$1`: before, `$2`: the batch); public so a
/// test can EXPLAIN it.
pub const PRUNE_BATCH_SQL: &str = "DELETE FROM processed_events WHERE id IN (
             SELECT id FROM processed_events
              WHERE status = 'processed' AND processed_at < $1
              ORDER BY processed_at LIMIT $2
              FOR UPDATE SKIP LOCKED)";

/// Deletes up to `batch` processed rows processed before `before` (never a
/// row in another status) and returns how many it deleted. Rows locked by
/// someone else are skipped, not waited for. Runs in the caller's transaction,
/// so the audit entry describing the batch commits with it.
pub async fn prune_batch(conn: &mut PgConnection, before: DateTime<Utc>, batch: i64) -> Result<u64, StoreError> {
    let done = sqlx::query(PRUNE_BATCH_SQL)
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

/// `activity`'s statement, read at every scrape; public so a test can EXPLAIN it.
pub const ACTIVITY_SQL: &str =
    "SELECT (SELECT max(processed_at) FROM processed_events WHERE processed_at IS NOT NULL) AS last_processed_at,
                (SELECT extract(epoch FROM now() - min(next_attempt_at))::float8 FROM processed_events
                  WHERE status = 'pending' AND next_attempt_at <= now()) AS consumer_lag_seconds,
                (SELECT count(*) FROM processed_events WHERE status = 'pending' AND replay_plan IS NOT NULL)
                  AS replay_rows_waiting";

pub async fn activity(pool: &PgPool) -> Result<Activity, StoreError> {
    sqlx::query_as(ACTIVITY_SQL).fetch_one(pool).await.map_err(failed("read ledger activity"))
}

/// Counts rows by status, for health and metrics.
pub async fn count_by_status(pool: &PgPool) -> Result<Vec<(String, i64)>, StoreError> {
    sqlx::query_as("SELECT status, count(*) FROM processed_events GROUP BY status ORDER BY status")
        .fetch_all(pool)
        .await
        .map_err(failed("count rows by status"))
}

/// Rows settled in one minute with one status.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct MinuteCount {
    pub minute: DateTime<Utc>,
    pub status: Status,
    pub count: i64,
}

/// `per_minute`'s statement (`$1`: since); public so a test can EXPLAIN it.
pub const PER_MINUTE_SQL: &str = "SELECT date_trunc('minute', processed_at) AS minute, status, count(*) AS count
           FROM processed_events
          WHERE processed_at >= $1 AND status IN ('processed', 'error')
          GROUP BY 1, 2 ORDER BY 1, 2";

/// Processed and failed rows per minute since `since`, for the console's
/// charts. Both conditions are on `processed_events_processing_time_idx`
/// (`(processed_at, status)`, partial on `processed_at IS NOT NULL`), which
/// the planner picks (`every_selector_and_runbook_query_is_served_by_an_index`
/// checks it with EXPLAIN on 200,000 rows), so the read is bounded by the
/// window, not by the size of the ledger.
pub async fn per_minute(pool: &PgPool, since: DateTime<Utc>) -> Result<Vec<MinuteCount>, StoreError> {
    sqlx::query_as(PER_MINUTE_SQL).bind(since).fetch_all(pool).await.map_err(failed("count rows per minute"))
}
