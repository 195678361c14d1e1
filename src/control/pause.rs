//! Operator actions on the workers: pause (and wait until every live worker
//! stopped taking work) and resume, each audited in the same transaction as
//! the change. `replay pause`, `replay resume` and `replay emergency-stop`
//! share them. A resume is refused while an emergency stop left events
//! saved and not put back ([`ResumeError::StopUnfinished`]).

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;

use crate::store::audit::{self, AuditEntry};
use crate::store::heartbeats::{self, WorkerState};
use crate::store::pause::{self, Pause};
use crate::store::{emergency_saved, failed, StoreError};

pub use crate::store::heartbeats::LIVE_WITHIN;

/// What a pause found.
#[derive(Debug, Clone, Serialize)]
pub struct Paused {
    pub pause: Option<Pause>,
    pub already_paused: bool,
    pub workers_paused: Vec<String>,
    pub workers_still_running: Vec<String>,
    /// Workers with no heartbeat for [`LIVE_WITHIN`]: named, not waited for.
    pub workers_not_heard_from: Vec<String>,
    /// From the call to the last live worker reporting paused.
    pub latency_ms: u64,
}

/// Pauses (audited, unless a pause is already in force) and waits up to
/// `wait` for every live worker to report paused.
pub async fn pause_workers(pool: &PgPool, operator: &str, reason: &str, wait: Duration) -> Result<Paused, StoreError> {
    let started = Instant::now();
    let mut tx = pool.begin().await.map_err(failed("pause"))?;
    let set = pause::set(&mut tx, operator, reason).await?;
    if set.is_some() {
        let entry = AuditEntry {
            operator: operator.to_string(),
            action: "workers.pause".into(),
            details: json!({"reason": reason}),
        };
        audit::append(&mut tx, &entry).await?;
    }
    tx.commit().await.map_err(failed("pause"))?;
    let current = pause::current(pool).await?;
    let (live, stale) = loop {
        let (live, stale) = heartbeats::live_and_stale(pool, LIVE_WITHIN).await?;
        if live.iter().all(|h| h.state == WorkerState::Paused) || started.elapsed() >= wait {
            break (live, stale);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (paused, running): (Vec<_>, Vec<_>) = live.into_iter().partition(|h| h.state == WorkerState::Paused);
    Ok(Paused {
        pause: current,
        already_paused: set.is_none(),
        workers_paused: paused.into_iter().map(|h| h.worker_id).collect(),
        workers_still_running: running.into_iter().map(|h| h.worker_id).collect(),
        workers_not_heard_from: stale
            .into_iter()
            .map(|h| format!("{} on {} (last seen {})", h.worker_id, h.host, h.last_seen.to_rfc3339()))
            .collect(),
        latency_ms: started.elapsed().as_millis() as u64,
    })
}

/// Why the workers were not resumed; the pause is still in force.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// An emergency stop that died after acking what it took off the queue
    /// left it saved, not in the ledger: resumed workers would never see it.
    #[error(
        "an emergency stop did not finish: {events} event(s) and {dead_letters} unreadable message(s) it took off the queue are saved in replay_control, not yet in the ledger. Run the same `replay emergency-stop` again (it continues and puts them back), then resume"
    )]
    StopUnfinished { events: i64, dead_letters: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Lifts the pause (audited); returns the pause lifted, if there was one.
/// Refused while an emergency stop's saved events wait to be put back.
pub async fn resume_workers(pool: &PgPool, operator: &str, reason: &str) -> Result<Option<Pause>, ResumeError> {
    let saved = emergency_saved::waiting(pool).await?;
    if !saved.is_empty() {
        return Err(ResumeError::StopUnfinished { events: saved.events, dead_letters: saved.dead_letters });
    }
    let mut tx = pool.begin().await.map_err(failed("resume"))?;
    let lifted = pause::lift(&mut tx).await?;
    if let Some(p) = &lifted {
        let entry = AuditEntry {
            operator: operator.to_string(),
            action: "workers.resume".into(),
            details: json!({"reason": reason, "paused_at": p.paused_at, "paused_by": p.operator, "pause_reason": p.reason}),
        };
        audit::append(&mut tx, &entry).await?;
    }
    tx.commit().await.map_err(failed("resume"))?;
    Ok(lifted)
}
