//! `replay emergency-stop`: pause every worker, purge the replay's messages,
//! restore the pre-replay backup, and lose nothing else.
//!
//! In order ([`stop`], one function per phase): pause and wait for the
//! workers (and for a running apply to see the pause and let go of the
//! control lock); take the queue, streamed (`queue`): once no consumer is
//! left (so none holds a message unacked elsewhere), batch by batch, the
//! replay's messages dropped and the rest kept (`keep`: each batch written
//! in its own transaction, then acked); drop the replay's events from the
//! outbox; save the events first seen since the backup that are not part of
//! the replay, and restore the backup in one transaction (`restore`; the
//! control plane, outside every dump, keeps the pause, the audit log, the
//! runs and what was saved); put everything saved back as `pending` (and
//! dead letters), so it is processed on resume. A destination replay's
//! stop restores nothing and takes the plan's messages out of its
//! subscriber's queue instead, giving every other one back (`subscriber`).
//! Each step is timed
//! (`steps`); a step that fails is reported, the pause stays, and what is
//! still safe goes on. Running it again continues, and puts back what a
//! stop that died had saved. The incident report is written last (`report`).
//!
//! Architecture invariant: nothing taken off the queue is acked before what
//! must survive of it is committed, where no restore can erase it (`keep`);
//! if the stop dies first, the connection closes and the broker puts every
//! unacked message back. Nothing is restored, put back into the ledger, or
//! dropped from the outbox unless the stop holds the apply lock.

mod keep;
mod queue;
mod report;
mod restore;
mod steps;
mod subscriber;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqlx::PgPool;

pub use queue::{BATCH as TAKE_BATCH, PREFETCH as TAKE_PREFETCH};
pub use report::Report;
pub use steps::{Step, StepError, Steps};

use crate::config::Endpoints;
use crate::control::pause::{self, Paused};
use crate::replay::plan::PlanId;
use crate::store::runs::{self, ControlLock};
use crate::store::{backup, emergency_saved, outbox};
use keep::Keeping;

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
    /// A destination replay's plan (`queue:NAME`): it took no backup and
    /// reset nothing here, so there is nothing to restore. Its messages are
    /// taken out of the subscriber's queue, and only its (`subscriber`).
    Destination { plan_id: PlanId, destination: String },
}

impl Restore {
    /// The plan whose replay is stopped; `None`: every replay's.
    pub fn plan_id(&self) -> Option<PlanId> {
        match self {
            Self::Plan { plan_id, .. } | Self::Destination { plan_id, .. } => Some(*plan_id),
            Self::Backup(_) | Self::Nothing => None,
        }
    }

    /// The dump to restore, if any.
    pub fn backup(&self) -> Option<&Path> {
        match self {
            Self::Plan { backup, .. } | Self::Backup(backup) => Some(backup),
            Self::Nothing | Self::Destination { .. } => None,
        }
    }

    /// The pre-replay backup of `plan_id`'s run (or, for a destination
    /// replay, where it published); `None` if the plan was never applied
    /// (there is then nothing of it to restore).
    pub async fn of_plan(pool: &PgPool, plan_id: PlanId) -> Result<Option<Self>, crate::store::StoreError> {
        Ok(runs::find(pool, plan_id).await?.map(|run| match run.destination {
            Some(destination) => Self::Destination { plan_id, destination },
            None => Self::Plan { plan_id, backup: run.backup_path.into() },
        }))
    }

    /// What an operator is told when [`Restore::of_plan`] finds no run.
    pub fn never_applied(plan_id: PlanId) -> String {
        format!(
            "plan {plan_id} was never applied: there is no pre-replay backup to restore. Use --backup FILE or --no-restore"
        )
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

/// Runs the stop; a failed step is recorded in the report, never returned
/// as an error, so every safe step still runs.
pub async fn stop(pool: &PgPool, endpoints: &Endpoints, request: &Request) -> Report {
    let mut report = Report::start(request);
    let plan_id = report.plan_id;

    // 1. Pause, and wait for the workers and for a running apply.
    report.pause = pause_workers(pool, request, &mut report.steps).await;
    let lock = wait_for_apply(pool, &mut report.steps).await;

    // 2. Take the replay off the queue, keeping the rest batch by batch, and out of the outbox.
    let keeping = Keeping::choose(request.restore.backup().is_some(), lock.as_ref());
    take_off_queue(pool, endpoints, request.wait, plan_id, keeping, &mut report).await;
    report.purged_replay_messages += drop_from_outbox(pool, lock.as_ref(), plan_id, &mut report.steps).await;
    if let Restore::Destination { destination, plan_id } = &request.restore {
        let step = Steps::start("destination");
        let outcome = take_off_subscriber(endpoints, destination, *plan_id, request.wait).await;
        report.purged_replay_messages += match &outcome {
            Ok((removed, _)) | Err(StepError::SubscriberUnreachable { removed, .. }) => *removed as usize,
            Err(_) => 0,
        };
        report.steps.record(step, outcome.map(|(_, detail)| detail));
    }

    // 3. Restore, saving first what arrived after the backup.
    let restore_failed = match (request.restore.backup(), &lock) {
        (Some(path), Some(_)) => !restore(pool, endpoints, path, plan_id, &mut report).await,
        _ => false,
    };

    // 4. Put back what was saved: this stop's, and any a stop that died left.
    put_back(pool, lock.as_ref(), keeping, &mut report).await;

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

/// Takes a destination replay's messages out of its subscriber's queue
/// (`subscriber`): how many were removed, and the step's detail.
async fn take_off_subscriber(
    endpoints: &Endpoints,
    destination: &str,
    plan: PlanId,
    wait: Duration,
) -> Result<(u64, String), StepError> {
    let queue = destination.strip_prefix("queue:").unwrap_or(destination);
    let removal = subscriber::remove(endpoints, queue, plan, wait)
        .await
        .map_err(|error| StepError::SubscriberNotTaken { destination: destination.to_string(), error })?;
    if removal.unreachable > 0 {
        return Err(StepError::SubscriberUnreachable {
            destination: destination.to_string(),
            plan: plan.to_string(),
            removed: removal.removed,
            left: removal.unreachable,
        });
    }
    Ok((
        removal.removed,
        format!(
            "removed {} message(s) of plan {plan} from {destination}; {} other message(s) given back in their order (marked redelivered). A destination replay took no backup: nothing is restored. Messages the subscriber's consumers already held could not be reached: if it processed some of this plan's, it must undo them (their x-replay-plan header is {plan})",
            removal.removed, removal.returned
        ),
    ))
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
/// exited; without it nothing is restored, put back or dropped from the
/// outbox. Under it, a restore left running by a stop that died is ended
/// first (rolled back), so it cannot erase what this stop writes.
async fn wait_for_apply(pool: &PgPool, steps: &mut Steps) -> Option<ControlLock> {
    let step = Steps::start("apply lock");
    let deadline = Instant::now() + LOCK_WAIT;
    let lock = loop {
        if let Ok(Some(lock)) = runs::try_lock(pool).await {
            break lock;
        }
        if Instant::now() >= deadline {
            steps.record(step, Err(StepError::ApplyStillRunning(LOCK_WAIT)));
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    match backup::end_orphaned_restores(pool).await {
        Ok(0) => steps.record(step, Ok("no apply running".into())),
        Ok(ended) => steps.record(
            step,
            Ok(format!("no apply running; {ended} restore(s) left running by a stop that died ended, rolled back")),
        ),
        Err(e) => {
            // Not knowing is the unsafe side: go on as without the lock.
            steps.record(step, Err(e.into()));
            return None;
        }
    }
    Some(lock)
}

/// Takes the whole queue, streamed: the replay's messages are counted as
/// purged, the others kept (`keeping` says where), each batch acked once
/// its keep committed.
async fn take_off_queue(
    pool: &PgPool,
    endpoints: &Endpoints,
    wait: Duration,
    plan: Option<PlanId>,
    keeping: Keeping,
    report: &mut Report,
) {
    let step = Steps::start("purge");
    let mut replay = 0;
    let outcome = take_and_keep(pool, endpoints, wait, plan, keeping, report, &mut replay).await;
    report.purged_replay_messages += replay;
    let kept = match keeping {
        Keeping::Ledger => "kept for the ledger",
        Keeping::Saved => "saved for the ledger",
    };
    let outcome = outcome.map(|batches| {
        format!(
            "{replay} replay message(s) removed, {} other message(s) {kept}, in {batches} batch(es)",
            report.kept_messages + report.dead_lettered
        )
    });
    report.steps.record(step, outcome);
}

/// The take's loop: one batch at a time, kept (committed), then acked.
/// Counts into `report` and `replay` as it goes, so a take that fails half
/// way still reports what it did. Returns how many batches there were.
async fn take_and_keep(
    pool: &PgPool,
    endpoints: &Endpoints,
    wait: Duration,
    plan: Option<PlanId>,
    keeping: Keeping,
    report: &mut Report,
    replay: &mut usize,
) -> Result<usize, StepError> {
    let mut batches = 0;
    // Every partition queue in turn: each is drained in its own order, and
    // its kept events are put back in its partition.
    for partition in endpoints.partition_list() {
        let mut taker =
            queue::Taker::open(endpoints, &partition.queue, wait, plan).await.map_err(StepError::QueueNotTaken)?;
        let taken = loop {
            let batch = match taker.next_batch().await {
                Ok(Some(batch)) => batch,
                Ok(None) => break Ok(()),
                Err(e) => break Err(StepError::QueueNotTaken(e)),
            };
            match keep::batch(pool, keeping, &batch.events, partition.ledger_index(), &batch.dead).await {
                Ok(added) => report.kept_events += added,
                Err(e) => break Err(StepError::NotKept(Box::new(e))),
            }
            if let Err(e) = taker.ack(&batch).await {
                break Err(StepError::QueueNotTaken(e));
            }
            batches += 1;
            *replay += batch.replay;
            report.kept_messages += batch.events.len();
            report.dead_lettered += batch.dead.len();
        };
        taker.close().await;
        taken?;
    }
    Ok(batches)
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

/// Restores the backup, saving first the events it does not hold; false if it failed.
async fn restore(pool: &PgPool, endpoints: &Endpoints, path: &Path, plan: Option<PlanId>, report: &mut Report) -> bool {
    let step = Steps::start("restore");
    match restore::restore_keeping(pool, endpoints, path, plan).await {
        Ok(saved) => {
            report.restored_from = Some(path.to_path_buf());
            let detail =
                format!("restored {}; {saved} event(s) first seen since saved, to be put back", path.display());
            report.steps.record(step, Ok(detail));
            true
        }
        Err(e) => {
            report.steps.record(step, Err(e));
            false
        }
    }
}

/// Puts everything saved back into the ledger (as pending) and
/// `dead_letters`, under the apply lock only: without it what is saved
/// stays saved, and the step says so. The step's detail also counts what
/// went straight into the ledger while the queue was taken (`keeping`).
async fn put_back(pool: &PgPool, lock: Option<&ControlLock>, keeping: Keeping, report: &mut Report) {
    let step = Steps::start("keep");
    let moved = match lock {
        Some(_) => keep::put_back(pool).await.map_err(|e| StepError::NotPutBack(Box::new(e))),
        None => Err(match emergency_saved::waiting(pool).await {
            Ok(waiting) => StepError::PutBackWithoutLock(waiting.events, waiting.dead_letters),
            Err(e) => StepError::NotPutBack(Box::new(e.into())),
        }),
    };
    let outcome = moved.map(|moved| {
        report.kept_events += moved.added;
        let dead = match keeping {
            Keeping::Ledger => report.dead_lettered as u64 + moved.dead_letters,
            Keeping::Saved => moved.dead_letters,
        };
        format!(
            "{} event(s) added as pending ({} of {} saved put back), {dead} unreadable message(s) dead-lettered",
            report.kept_events, moved.added, moved.saved
        )
    });
    report.steps.record(step, outcome);
}
