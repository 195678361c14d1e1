//! `replay emergency-stop`: pause every worker, purge the replay's messages,
//! restore the pre-replay backup, and lose nothing else.
//!
//! In order ([`stop`], one function per phase): pause and wait for the
//! workers (and for a running apply to see the pause and let go of the
//! control lock); take every ready message off the queue (consumers are
//! gone, so none is held unacked elsewhere), dropping the replay's and
//! keeping the rest (`queue`); drop the replay's events from the outbox;
//! save the ledger rows of events first seen since the backup that are not
//! part of the replay, and restore the backup in one transaction (the
//! control plane, outside every dump, keeps the pause, the audit log and the
//! runs); put the saved events and the kept messages back as `pending`, so
//! they are processed on resume (`restore`); only then ack the taken
//! messages. Each step is timed (`steps`); a step that fails is reported,
//! the pause stays, and what is still safe goes on. Running it again
//! continues. The incident report is written last (`report`).
//!
//! Architecture invariant: nothing taken off the queue is acked before what
//! must survive of it is committed to the ledger; if the stop dies first, the
//! channel closes and the broker puts every message back. Nothing is
//! restored, and no outbox event dropped, unless the stop holds the apply
//! lock.

mod queue;
mod report;
mod restore;
mod steps;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqlx::PgPool;

pub use report::Report;
pub use steps::{Step, StepError, Steps};

use crate::config::Endpoints;
use crate::control::pause::{self, Paused};
use crate::replay::plan::PlanId;
use crate::store::dead_letters::DeadLetter;
use crate::store::outbox;
use crate::store::runs::{self, ControlLock};
use crate::wire::envelope::Event;
use queue::Held;

/// Longest wait for a running apply to let go of the control lock.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// What to restore.
#[derive(Debug, Clone)]
pub enum Restore {
    /// The pre-replay backup of this plan's run.
    Plan { plan_id: PlanId, backup: PathBuf },
    /// This dump; any replay's messages are purged.
    Backup(PathBuf),
    /// Pause and purge only.
    Nothing,
}

impl Restore {
    /// The plan whose replay is stopped; `None`: every replay's.
    pub fn plan_id(&self) -> Option<PlanId> {
        match self {
            Self::Plan { plan_id, .. } => Some(*plan_id),
            Self::Backup(_) | Self::Nothing => None,
        }
    }

    /// The dump to restore, if any.
    pub fn backup(&self) -> Option<&Path> {
        match self {
            Self::Plan { backup, .. } | Self::Backup(backup) => Some(backup),
            Self::Nothing => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub operator: String,
    pub reason: String,
    pub restore: Restore,
    pub wait: Duration,
    /// Where the incident report goes; `None`: next to the backup, else `backups/`.
    pub report_dir: Option<PathBuf>,
}

/// What the stop took off the queue and must put back before it acks.
#[derive(Default)]
struct ToKeep {
    /// The connection the taken messages are held on; `None` if nothing was taken.
    held: Option<Held>,
    events: Vec<Event>,
    dead: Vec<DeadLetter>,
}

/// How the restore phase ended.
enum Restored {
    /// Nothing to restore, or no lock to restore under (that step failed already).
    NotTried,
    /// Restored; the events first seen since the backup, to put back.
    Done(Vec<Event>),
    Failed,
}

/// Runs the stop; a failed step is recorded in the report, never returned
/// as an error, so every safe step still runs.
pub async fn stop(pool: &PgPool, endpoints: &Endpoints, request: &Request) -> Report {
    let mut report = Report::start(request);
    let plan_id = report.plan_id;

    // 1. Pause, and wait for the workers and for a running apply.
    report.pause = pause_workers(pool, request, &mut report.steps).await;
    let lock = wait_for_apply(pool, &mut report.steps).await;

    // 2. Take the replay off the queue (the rest unacked until the end), and out of the outbox.
    let mut to_keep = take_off_queue(endpoints, request.wait, plan_id, &mut report).await;
    report.purged_replay_messages += drop_from_outbox(pool, lock.as_ref(), plan_id, &mut report.steps).await;

    // 3. Restore, keeping what arrived after the backup.
    let restored = match (request.restore.backup(), &lock) {
        (Some(path), Some(_)) => restore(pool, endpoints, path, plan_id, &mut report).await,
        _ => Restored::NotTried,
    };
    let restore_failed = matches!(restored, Restored::Failed);
    if let Restored::Done(saved) = restored {
        to_keep.events.extend(saved);
    }

    // 4. Put back what must survive, then let the broker forget what was taken.
    report.kept_events = keep_then_ack(pool, &to_keep, &mut report.steps).await;
    drop(to_keep);

    // 5. Record it: the run is never resumed, the audit log says what happened.
    // The run is marked stopped unless its restore failed, so also when no
    // restore ran (none asked, or an apply kept the lock: that step failed).
    if let (Some(plan_id), false) = (plan_id, restore_failed) {
        if let Err(e) = runs::stop(pool, plan_id).await {
            report.steps.failed_untimed("mark run stopped", e.into());
        }
    }
    report.file(pool, request).await;
    drop(lock);
    report
}

/// Pauses every worker and waits for them; the step fails if some are
/// still running after the wait (the pause stays either way).
async fn pause_workers(pool: &PgPool, request: &Request, steps: &mut Steps) -> Option<Paused> {
    let step = Steps::start("pause");
    match pause::pause_workers(pool, &request.operator, &request.reason, request.wait).await {
        Ok(paused) => {
            let outcome = if paused.workers_still_running.is_empty() {
                Ok(format!("{} worker(s) paused in {} ms", paused.workers_paused.len(), paused.latency_ms))
            } else {
                Err(StepError::StillRunning(paused.workers_still_running.clone()))
            };
            steps.record(step, outcome);
            Some(paused)
        }
        Err(e) => {
            steps.record(step, Err(e.into()));
            None
        }
    }
}

/// Takes the control lock once a running apply has seen the pause and
/// exited; without it nothing is restored or dropped from the outbox.
async fn wait_for_apply(pool: &PgPool, steps: &mut Steps) -> Option<ControlLock> {
    let step = Steps::start("apply lock");
    let deadline = Instant::now() + LOCK_WAIT;
    let lock = loop {
        if let Ok(Some(lock)) = runs::try_lock(pool).await {
            break Some(lock);
        }
        if Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let outcome = match &lock {
        Some(_) => Ok("no apply running".into()),
        None => Err(StepError::ApplyStillRunning(LOCK_WAIT)),
    };
    steps.record(step, outcome);
    lock
}

/// Takes every message off the queue: the replay's are counted as purged,
/// the others read into what must be kept.
async fn take_off_queue(endpoints: &Endpoints, wait: Duration, plan: Option<PlanId>, report: &mut Report) -> ToKeep {
    let step = Steps::start("purge");
    match queue::take(endpoints, wait, plan).await {
        Ok(taken) => {
            report.purged_replay_messages += taken.replay;
            report.kept_messages = taken.events.len();
            report.dead_lettered = taken.dead.len();
            let detail = format!(
                "{} replay message(s) removed, {} other message(s) kept for the ledger",
                taken.replay, taken.others
            );
            report.steps.record(step, Ok(detail));
            ToKeep { held: Some(taken.held), events: taken.events, dead: taken.dead }
        }
        Err(e) => {
            report.steps.record(step, Err(StepError::QueueNotTaken(e)));
            ToKeep::default()
        }
    }
}

/// A replay's events the broker never confirmed wait in the outbox (the
/// paused workers relay nothing): drop them too, broker or not, but only
/// under the apply lock, since a running apply may still be adding some.
/// Returns how many were dropped.
async fn drop_from_outbox(pool: &PgPool, lock: Option<&ControlLock>, plan: Option<PlanId>, steps: &mut Steps) -> usize {
    let step = Steps::start("outbox");
    let dropped = match lock {
        Some(_) => outbox::drop_replay(pool, plan).await.map_err(StepError::from),
        None => Err(StepError::NoLock),
    };
    match dropped {
        Ok(dropped) => {
            steps.record(step, Ok(format!("{dropped} replay event(s) removed from the outbox")));
            dropped as usize
        }
        Err(e) => {
            steps.record(step, Err(StepError::OutboxNotDropped(Box::new(e))));
            0
        }
    }
}

/// Restores the backup, saving first the events it does not hold.
async fn restore(
    pool: &PgPool,
    endpoints: &Endpoints,
    path: &Path,
    plan: Option<PlanId>,
    report: &mut Report,
) -> Restored {
    let step = Steps::start("restore");
    match restore::restore_keeping(pool, endpoints, path, plan).await {
        Ok(saved) => {
            report.restored_from = Some(path.to_path_buf());
            let detail = format!("restored {}; {} event(s) first seen since kept", path.display(), saved.len());
            report.steps.record(step, Ok(detail));
            Restored::Done(saved)
        }
        Err(e) => {
            report.steps.record(step, Err(e));
            Restored::Failed
        }
    }
}

/// Puts back what must survive (events as pending, unreadable messages as
/// dead letters), and only once that is committed acks the taken messages.
/// If the keep fails nothing is acked: the messages go back to the queue
/// when their connection drops. Returns how many events were added.
async fn keep_then_ack(pool: &PgPool, to_keep: &ToKeep, steps: &mut Steps) -> u64 {
    let step = Steps::start("keep");
    match restore::keep(pool, &to_keep.events, &to_keep.dead).await {
        Ok(added) => {
            let detail = format!(
                "{added} event(s) added as pending, {} unreadable message(s) dead-lettered",
                to_keep.dead.len()
            );
            steps.record(step, Ok(detail));
            if let Some(held) = &to_keep.held {
                if let Err(e) = held.ack_all().await {
                    steps.record(step.part("ack"), Err(e.into()));
                }
            }
            added
        }
        Err(e) => {
            steps.record(step, Err(StepError::NotKept(Box::new(e))));
            0
        }
    }
}
