//! Worker heartbeats, `replay_control.worker_heartbeats`: each worker says
//! every second who and where it is and whether it is taking work, so a pause
//! can wait for every live worker to stop and name the ones that went quiet.
//! All SQL on that table lives here.

use super::{failed, StoreError};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// A worker whose heartbeat is older than this is not live: a pause does not
/// wait for it, health counts it stale.
pub const LIVE_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// A worker's state as it last reported it, stored as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type, serde::Serialize)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Taking work: leading its partition.
    Running,
    /// A hot standby: connected, ready to take the partition over when its
    /// leader goes, taking no work until then.
    Standby,
    /// Paused: no consumer open, no claim in progress.
    Paused,
    /// Shut down cleanly.
    Stopped,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Standby => "standby",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
        }
    }
}

/// A worker's last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct Heartbeat {
    pub worker_id: String,
    pub host: String,
    pub pid: i32,
    pub state: WorkerState,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// Records that `worker` is alive and in `state`.
pub async fn beat(pool: &PgPool, worker: &str, host: &str, state: WorkerState) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO replay_control.worker_heartbeats (worker_id, host, pid, state)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (worker_id) DO UPDATE
            SET host = EXCLUDED.host, pid = EXCLUDED.pid, state = EXCLUDED.state, last_seen = now(),
                started_at = CASE WHEN worker_heartbeats.pid = EXCLUDED.pid
                                  THEN worker_heartbeats.started_at ELSE now() END",
    )
    .bind(worker)
    .bind(host)
    .bind(std::process::id() as i32)
    .bind(state.as_str())
    .execute(pool)
    .await
    .map_err(failed("record a heartbeat"))?;
    Ok(())
}

/// Every worker that reported within `live_within`, and those that went quiet
/// (stopped cleanly ones left out).
pub async fn live_and_stale(
    pool: &PgPool,
    live_within: std::time::Duration,
) -> Result<(Vec<Heartbeat>, Vec<Heartbeat>), StoreError> {
    let all: Vec<Heartbeat> = sqlx::query_as(
        "SELECT worker_id, host, pid, state, started_at, last_seen FROM replay_control.worker_heartbeats
          WHERE state <> 'stopped' ORDER BY worker_id",
    )
    .fetch_all(pool)
    .await
    .map_err(failed("read heartbeats"))?;
    let cutoff = Utc::now() - chrono::Duration::from_std(live_within).unwrap_or_default();
    Ok(all.into_iter().partition(|h| h.last_seen >= cutoff))
}
