//! Replay runs, `replay_control.replay_runs`: one row per applied plan,
//! recording what `replay apply` did once (backup, audit entry, reset) and how
//! far its republish got, so running it again resumes instead of repeating.
//! Also the lock that lets one apply or emergency stop run at a time. All SQL
//! on that table lives here.

use super::{failed, StoreError};
use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres};

use crate::replay::plan::id::PlanId;

/// Key of the session lock held by a running apply or emergency stop.
const CONTROL_LOCK: &str = "replay_control.apply";

/// Where a plan's run stands, stored as its lowercase name (the column's
/// CHECK constraint allows exactly these four).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type, serde::Serialize)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Audit entry and run recorded, rows being reset in chunks (the
    /// republish follows behind), or stopped mid-way: running apply again
    /// resumes the reset from `reset_rows`.
    Resetting,
    /// Reset done, republish under way or interrupted: running apply again resumes.
    Publishing,
    /// Every event confirmed by the broker or kept in the outbox.
    Done,
    /// Stopped by an emergency stop, its backup restored: never resumed.
    Stopped,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resetting => "resetting",
            Self::Publishing => "publishing",
            Self::Done => "done",
            Self::Stopped => "stopped",
        }
    }

    /// Whether a re-run of `replay apply` would go on with it.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Resetting | Self::Publishing)
    }
}

/// A plan's run.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct ReplayRun {
    pub plan_id: PlanId,
    pub digest: String,
    pub operator: String,
    pub backup_path: String,
    pub audit_id: i64,
    pub events: i64,
    pub published: i64,
    /// Rows of the plan the reset has gone through, in plan order.
    pub reset_rows: i64,
    /// Of those, rows that had changed since the plan was checked: left alone.
    pub stale_rows: i64,
    pub state: RunState,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Where a destination replay published (`queue:NAME`); `None` for
    /// a replay to our own workers, which has a backup.
    pub destination: Option<String>,
    /// A canary apply's halt: when and why, until the apply runs again.
    pub halted_at: Option<DateTime<Utc>>,
    pub halted_reason: Option<String>,
}

impl ReplayRun {
    /// The state an operator reads: `halted` while a halt stands on a run
    /// that is still open, else the phase.
    pub fn shown_state(&self) -> &'static str {
        match (&self.halted_reason, self.state.is_open()) {
            (Some(_), true) => "halted",
            _ => self.state.as_str(),
        }
    }

    /// Rows of the plan reset so far, in plan order: `reset_rows` while
    /// resetting, every row of the plan (`plan_rows`) once past it.
    pub fn rows_reset(&self, plan_rows: u64) -> u64 {
        match self.state {
            RunState::Resetting => u64::try_from(self.reset_rows).unwrap_or(0),
            RunState::Publishing | RunState::Done | RunState::Stopped => plan_rows,
        }
    }

    /// Events confirmed so far.
    pub fn events_published(&self) -> u64 {
        u64::try_from(self.published).unwrap_or(0)
    }
}

/// What a new run starts from.
pub struct NewRun<'a> {
    pub plan_id: PlanId,
    pub digest: &'a str,
    pub operator: &'a str,
    pub backup_path: &'a str,
    pub audit_id: i64,
    pub events: i64,
    pub destination: Option<&'a str>,
}

/// The control lock, held for as long as this value lives: its connection
/// is closed on drop rather than returned to the pool, so the session lock
/// goes with it even if the process is killed.
pub struct ControlLock {
    _conn: PoolConnection<Postgres>,
}

/// Takes the control lock, or returns `None` if another apply or emergency
/// stop holds it.
pub async fn try_lock(pool: &PgPool) -> Result<Option<ControlLock>, StoreError> {
    let mut conn = pool.acquire().await.map_err(failed("take the control lock"))?;
    let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
        .bind(CONTROL_LOCK)
        .fetch_one(&mut *conn)
        .await
        .map_err(failed("take the control lock"))?;
    if taken {
        // Never hand a connection holding the lock back to the pool.
        conn.close_on_drop();
        Ok(Some(ControlLock { _conn: conn }))
    } else {
        Ok(None)
    }
}

pub async fn find(pool: &PgPool, plan_id: PlanId) -> Result<Option<ReplayRun>, StoreError> {
    sqlx::query_as("SELECT * FROM replay_control.replay_runs WHERE plan_id = $1")
        .bind(plan_id)
        .fetch_optional(pool)
        .await
        .map_err(failed("read a replay run"))
}

/// Records a halt of `plan_id`'s run, inside the transaction that audits it.
pub async fn halted(conn: &mut PgConnection, plan_id: PlanId, reason: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE replay_control.replay_runs SET halted_at = now(), halted_reason = $2 WHERE plan_id = $1")
        .bind(plan_id)
        .bind(reason)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(failed("record a halt"))
}

/// Lifts a halt: the same apply runs again.
pub async fn clear_halt(pool: &PgPool, plan_id: PlanId) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE replay_control.replay_runs SET halted_at = NULL, halted_reason = NULL
          WHERE plan_id = $1 AND halted_at IS NOT NULL",
    )
    .bind(plan_id)
    .execute(pool)
    .await
    .map(|_| ())
    .map_err(failed("lift a halt"))
}

/// Records a run, `resetting`, inside the apply's first transaction.
pub async fn start(conn: &mut PgConnection, run: &NewRun<'_>) -> Result<ReplayRun, StoreError> {
    sqlx::query_as(
        "INSERT INTO replay_control.replay_runs (plan_id, digest, operator, backup_path, audit_id, events, state, destination)
         VALUES ($1, $2, $3, $4, $5, $6, 'resetting', $7)
         RETURNING *",
    )
    .bind(run.plan_id)
    .bind(run.digest)
    .bind(run.operator)
    .bind(run.backup_path)
    .bind(run.audit_id)
    .bind(run.events)
    .bind(run.destination)
    .fetch_one(conn)
    .await
    .map_err(failed("record a replay run"))
}

/// Records, inside a reset chunk's transaction, how far the reset got: it
/// commits with the chunk, so a re-run resumes exactly after it.
pub async fn record_reset(conn: &mut PgConnection, plan_id: PlanId, reset: i64, stale: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE replay_control.replay_runs SET reset_rows = $2, stale_rows = $3 WHERE plan_id = $1")
        .bind(plan_id)
        .bind(reset)
        .bind(stale)
        .execute(conn)
        .await
        .map_err(failed("record reset progress"))?;
    Ok(())
}

/// Marks the reset complete: only the republish is left.
pub async fn reset_done(pool: &PgPool, plan_id: PlanId) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE replay_control.replay_runs SET state = 'publishing' WHERE plan_id = $1 AND state = 'resetting'",
    )
    .bind(plan_id)
    .execute(pool)
    .await
    .map_err(failed("mark a replay run reset"))?;
    Ok(())
}

/// Records that the first `published` events are confirmed by the broker.
pub async fn advance(pool: &PgPool, plan_id: PlanId, published: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE replay_control.replay_runs SET published = $2 WHERE plan_id = $1")
        .bind(plan_id)
        .bind(published)
        .execute(pool)
        .await
        .map_err(failed("record republish progress"))?;
    Ok(())
}

/// Marks a run stopped by an emergency stop: it is never resumed.
pub async fn stop(pool: &PgPool, plan_id: PlanId) -> Result<(), StoreError> {
    settle(pool, plan_id, RunState::Stopped, "mark a replay run stopped").await
}

/// Marks the run done.
pub async fn finish(pool: &PgPool, plan_id: PlanId) -> Result<(), StoreError> {
    settle(pool, plan_id, RunState::Done, "mark a replay run done").await
}

/// Ends a run in `state`, stamping when.
async fn settle(pool: &PgPool, plan_id: PlanId, state: RunState, op: &'static str) -> Result<(), StoreError> {
    sqlx::query("UPDATE replay_control.replay_runs SET state = $2, finished_at = now() WHERE plan_id = $1")
        .bind(plan_id)
        .bind(state)
        .execute(pool)
        .await
        .map_err(failed(op))?;
    Ok(())
}
