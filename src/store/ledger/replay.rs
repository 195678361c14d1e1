//! The replay side of the ledger: a selector's rows streamed for a plan,
//! their versions, the versioned reset with its history, workflow
//! triggers, a plan's progress and the canary's counts, and what the
//! emergency stop keeps.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::{PgConnection, PgPool, Row};

use super::*;
use crate::replay::selector::Selector;
use crate::store::{failed, StoreError};
use crate::wire::envelope::Event;

/// How selected rows are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Event time, then id: replay order.
    EventTime,
    /// Latest received first: what an operator looking around wants.
    NewestFirst,
    /// Latest event time first (then latest received), from the row after
    /// ledger row `after` in that order if given: the console's keyset pages.
    /// Each filter an operator uses has an index in this order: the event
    /// time, the type and event time, and failed or skipped rows by event
    /// time (migration 0015); a page is one index range, never a scan back
    /// through the ledger to old rows.
    LatestFirst { after: Option<i64> },
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
    let mut query = selection(Reading::Plan.columns(), selector, Order::EventTime);
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

/// A ledger row's Postgres row version (`xmin`), as a plan records it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RowVersion {
    pub id: i64,
    pub version: String,
}

/// The current version of each row among `ids` that still exists.
pub async fn versions(conn: &mut PgConnection, ids: &[i64]) -> Result<Vec<RowVersion>, StoreError> {
    sqlx::query_as("SELECT id, xmin::text AS version FROM processed_events WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(conn)
        .await
        .map_err(failed("read row versions"))
}

/// Resets rows for a replay plan, inside the caller's transaction (one chunk
/// of the apply's reset), each only if it is still at the version planned in
/// `rows`; returns how many were reset, so fewer than asked means some
/// changed since planning and were left alone. Each
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
    rows: &[RowVersion],
    plan_id: uuid::Uuid,
    operator: &str,
    fallback: DateTime<Utc>,
    forced: bool,
) -> Result<u64, StoreError> {
    let (ids, versions): (Vec<i64>, Vec<&str>) = rows.iter().map(|r| (r.id, r.version.as_str())).unzip();
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

/// Merges the payload index's pending list (GIN `fastupdate`) into the
/// index, in a statement of its own. Every reset row is a new row version
/// with the payload's keys to index again; the list takes them cheaply, but
/// the statement that finds it over `gin_pending_list_limit` merges it
/// inline: one reset chunk in about 80 (measured at 500-row chunks) then
/// held its rows 150 to 430 ms instead of 15. Merged here every 30,000
/// rows, outside any chunk, no chunk took over 85 ms, for about 10% more
/// reset time than the inline merges. The merge takes no row lock.
pub async fn merge_payload_index(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query("SELECT gin_clean_pending_list('processed_events_payload_idx'::regclass)")
        .execute(pool)
        .await
        .map_err(failed("merge the payload index's pending list"))?;
    Ok(())
}

/// Refreshes the planner's statistics of the ledger. A large reset turns a
/// ledger the statistics know as all settled into one with many pending
/// rows: until autovacuum's next analyze (a minute or more away), the
/// planner takes the partial index of due rows for nearly empty and walks
/// all of them for every batch of republished messages (measured: 950
/// events/s instead of thousands, with 890,000 rows pending). `ANALYZE`
/// samples a bounded number of rows (300 ms on a million) and blocks no
/// reader or writer.
pub async fn refresh_statistics(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query("ANALYZE processed_events").execute(pool).await.map_err(failed("refresh the ledger's statistics"))?;
    Ok(())
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
                        (event_id, event_type, payload, occurred_at, status, replay_plan, next_attempt_at,
                         partition_key)
                 VALUES ($1, $2, $3::jsonb, $4, 'pending', $5, $7, $8)
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
        .bind(event.partition_key.as_deref())
        .execute(&mut *conn)
        .await
        .map_err(failed("add workflow trigger events"))?;
    }
    Ok(())
}

/// Adds events as `pending` rows, due now, each in the partition given
/// beside it (`partitions[i]` for `events[i]`); ids already in the ledger
/// are left as they are. Returns how many were added.
pub async fn insert_pending(conn: &mut PgConnection, events: &[Event], partitions: &[i16]) -> Result<u64, StoreError> {
    let done = crate::store::bind_event_columns(
        sqlx::query(
            "INSERT INTO processed_events (event_id, event_type, payload, occurred_at, status, partition_key,
                                           partition_index)
             SELECT e.event_id, e.event_type, e.payload::jsonb, e.occurred_at, 'pending', e.partition_key,
                    e.partition_index
               FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::smallint[])
                 AS e(event_id, event_type, payload, occurred_at, partition_key, partition_index)
             ON CONFLICT (event_id) DO NOTHING",
        ),
        events,
    )
    .bind(events.iter().map(|e| e.partition_key.as_deref()).collect::<Vec<_>>())
    .bind(partitions)
    .execute(conn)
    .await
    .map_err(failed("add pending events"))?;
    Ok(done.rows_affected())
}

/// Makes every row partition 0's: a rehearsal applies its scratch copy
/// with one pipeline, as one partition, whatever partitions the live system
/// runs. Only ever run on a scratch database.
pub async fn fold_partitions(pool: &PgPool) -> Result<u64, StoreError> {
    let done = sqlx::query("UPDATE processed_events SET partition_index = 0 WHERE partition_index <> 0")
        .execute(pool)
        .await
        .map_err(failed("fold the scratch copy's partitions into one"))?;
    Ok(done.rows_affected())
}

/// The events stored for `event_ids`, as they are republished, in the order asked.
pub async fn events(pool: &PgPool, event_ids: &[String]) -> Result<Vec<Event>, StoreError> {
    let rows: Vec<ClaimedRow> = sqlx::query_as(
        "SELECT id, event_id, event_type, payload, occurred_at, retry_count, partition_key FROM processed_events
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

/// How many of some rows of a plan are settled, and how many of those failed:
/// what a canary apply decides on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettledCount {
    /// The rows counted.
    pub rows: i64,
    /// Settled: processed, skipped, in error, or failing with retries left.
    pub settled: i64,
    /// In error, or failing with retries left.
    pub failed: i64,
    /// One failure as `event_type: error`, for the operator.
    pub example: Option<String>,
}

/// The settled share of the rows of `event_ids` (a canary: the first events
/// of a plan, all reset for it). A row still parked for its plan or being
/// processed is not settled; one that failed once is, as a failure.
pub async fn settled_events(pool: &PgPool, event_ids: &[String]) -> Result<SettledCount, StoreError> {
    let (rows, settled, failed, example): (i64, i64, i64, Option<String>) = sqlx::query_as(
        "SELECT count(*),
                count(*) FILTER (WHERE status IN ('processed', 'skipped', 'error')
                                    OR (status = 'pending' AND error_message IS NOT NULL)),
                count(*) FILTER (WHERE status = 'error' OR (status = 'pending' AND error_message IS NOT NULL)),
                min(event_type || ': ' || error_message) FILTER (WHERE error_message IS NOT NULL)
           FROM processed_events WHERE event_id = ANY($1)",
    )
    .bind(event_ids)
    .fetch_one(pool)
    .await
    .map_err(failed("count a canary's settled rows"))?;
    Ok(SettledCount { rows, settled, failed, example })
}

/// The settled share of every row a plan reset so far (its replay history):
/// how the rest of a canary apply is watched.
pub async fn plan_settled(pool: &PgPool, plan_id: uuid::Uuid) -> Result<SettledCount, StoreError> {
    let (rows, settled, failed, example): (i64, i64, i64, Option<String>) = sqlx::query_as(
        "SELECT count(*),
                count(*) FILTER (WHERE p.status IN ('processed', 'skipped', 'error')
                                    OR (p.status = 'pending' AND p.error_message IS NOT NULL)),
                count(*) FILTER (WHERE p.status = 'error' OR (p.status = 'pending' AND p.error_message IS NOT NULL)),
                min(p.event_type || ': ' || p.error_message) FILTER (WHERE p.error_message IS NOT NULL)
           FROM (SELECT DISTINCT ledger_id FROM replay_history WHERE plan_id = $1) h
           JOIN processed_events p ON p.id = h.ledger_id",
    )
    .bind(plan_id)
    .fetch_one(pool)
    .await
    .map_err(failed("count a plan's settled rows"))?;
    Ok(SettledCount { rows, settled, failed, example })
}

/// A row of a plan that failed for good, at its current version.
#[derive(Debug, Clone)]
pub struct FailedRow {
    pub row: RowVersion,
    pub event_id: String,
}

/// A plan's rows in error (failed for good since it reset them), at their
/// current versions: what a resumed canary retries.
pub async fn failed_of_plan(pool: &PgPool, plan_id: uuid::Uuid) -> Result<Vec<FailedRow>, StoreError> {
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT p.id, p.xmin::text, p.event_id
           FROM (SELECT DISTINCT ledger_id FROM replay_history WHERE plan_id = $1) h
           JOIN processed_events p ON p.id = h.ledger_id
          WHERE p.status = 'error' ORDER BY p.id",
    )
    .bind(plan_id)
    .fetch_all(pool)
    .await
    .map_err(failed("find a plan's failed rows"))?;
    Ok(rows
        .into_iter()
        .map(|(id, version, event_id)| FailedRow { row: RowVersion { id, version }, event_id })
        .collect())
}

/// Keeps a halted plan's parked rows for its republish: claimers never take
/// them until [`release_parked`] (the resumed apply) gives them a fallback
/// time again. Returns how many rows are held.
pub async fn hold_parked(pool: &PgPool, plan_id: uuid::Uuid) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE processed_events SET next_attempt_at = $2, updated_at = now()
          WHERE replay_plan = $1 AND status = 'pending' AND next_attempt_at < $2",
    )
    .bind(plan_id)
    .bind(super::worker::never())
    .execute(pool)
    .await
    .map_err(failed("hold a halted plan's parked rows"))?;
    Ok(done.rows_affected())
}

/// Gives the rows [`hold_parked`] held for a plan the fallback time
/// `fallback` again; returns how many.
pub async fn release_parked(pool: &PgPool, plan_id: uuid::Uuid, fallback: DateTime<Utc>) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE processed_events SET next_attempt_at = $3, updated_at = now()
          WHERE replay_plan = $1 AND status = 'pending' AND next_attempt_at >= $2",
    )
    .bind(plan_id)
    .bind(super::worker::never())
    .bind(fallback)
    .execute(pool)
    .await
    .map_err(failed("release a resumed plan's parked rows"))?;
    Ok(done.rows_affected())
}

/// How a plan's rows (its replay history: reset rows and trigger events)
/// stand, by status and error message.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct OutcomeGroup {
    pub status: Status,
    pub error: Option<String>,
    pub count: i64,
}

/// A plan's rows grouped by status and error, most frequent first: what a
/// rehearsal reports of the ledger.
pub async fn plan_outcome(pool: &PgPool, plan_id: uuid::Uuid) -> Result<Vec<OutcomeGroup>, StoreError> {
    sqlx::query_as(concat!(
        "SELECT p.status, CASE WHEN p.error_message IS NOT NULL THEN ",
        normalized_error!(),
        " END AS error, count(*) AS count
           FROM (SELECT DISTINCT ledger_id FROM replay_history WHERE plan_id = $1) h
           JOIN processed_events p ON p.id = h.ledger_id
          GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
    ))
    .bind(plan_id)
    .fetch_all(pool)
    .await
    .map_err(failed("group a plan's rows by outcome"))
}

/// Which of `event_ids` are processed.
pub async fn processed_among(pool: &PgPool, event_ids: &[String]) -> Result<Vec<String>, StoreError> {
    sqlx::query_scalar("SELECT event_id FROM processed_events WHERE event_id = ANY($1) AND status = 'processed'")
        .bind(event_ids)
        .fetch_all(pool)
        .await
        .map_err(failed("find processed events"))
}
