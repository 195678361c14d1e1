//! Applying a plan: every safety check first, then, in order, a checked
//! backup, one short transaction that writes the audit entry and the run
//! record, and the reset of the rows in chunks with the republish (publisher
//! confirms, paced) following right behind it; all of it resumable.
//!
//! [`check`] and [`execute`] are the runbook; each phase is a file, and
//! states the invariant it keeps beside the code that keeps it:
//! - `checks`: every refusal; a refusal changes nothing.
//! - `reset`: the backup, the short transaction, and the reset in chunks,
//!   each committed with the run's progress; each row is reset at its
//!   planned version and stays parked for its plan.
//! - `republish`: the confirmed, paced republish, never ahead of the reset,
//!   and the outbox hand-off; a run is done only once every event is
//!   confirmed or in the outbox.
//! - `canary`: the canary apply's policy, its wait and judgement, the guard
//!   over the rest, and the audited halt.
//! - `destination`: a plan with a destination queue: no backup, no reset,
//!   its events published to that queue alone (see [`Target`]).
//! - `error`: what an apply answers when it does not finish.
//!
//! A resumed apply (its run record exists) never repeats the backup or the
//! audit entry: [`execute`] goes on with the reset where it stopped, then
//! with the republish. Whether to stop (interrupt, pause, broker refusal) is
//! decided in one place, [`stop_here`], between two chunks or two batches;
//! a canary's halt is the republish's own, and stops the reset at its next
//! chunk too. A halted plan's parked rows are held from claimers (their
//! fallback time put off) until the same apply runs again.

mod canary;
mod checks;
mod destination;
mod error;
mod republish;
mod reset;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use canary::{parse_failure_rate, Canary, DEFAULT_WAIT as DEFAULT_CANARY_WAIT};
pub(crate) use checks::data_fingerprint;
pub use checks::{check, rehearsal_of, Checked, Rehearsed};
pub use error::{ApplyError, Reached, Refusal};
pub(crate) use reset::reset_workflow;

use crate::config::Endpoints;
use crate::replay::plan::{Destination, PlanId, SealedPlan};
use crate::store::ledger;
use crate::store::runs::{self, ReplayRun};
use crate::store::{pause, StoreError};
use crate::wire::publisher::Publisher;
use crate::wire::transport::{self, TransportError};

/// Where the pre-replay backup comes from.
#[derive(Debug, Clone)]
pub enum BackupSource {
    /// Take a fresh one into this directory.
    Fresh { dir: PathBuf },
    /// Use this dump if it is younger than `max_age` and readable.
    Existing { path: PathBuf, max_age: Duration },
}

/// How to apply.
#[derive(Debug, Clone)]
pub struct Request {
    pub operator: String,
    pub allow_external_effects: bool,
    pub backup: BackupSource,
    /// Events per second; unpaced when `None`.
    pub rate: Option<u32>,
    /// Publish this canary first and go on only if it passes (`--canary`).
    pub canary: Option<Canary>,
    /// Refuse a plan without a current rehearsal (`--require-rehearsal`).
    pub require_rehearsal: bool,
}

/// Progress of an apply's phases, for a bar or plain lines.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// The pre-replay dump has this many bytes so far.
    Backup { bytes: u64, seconds: f64 },
    /// Rows reset so far, of the plan's rows.
    Reset { rows: u64, total: u64 },
    /// Events confirmed so far, of the plan's events.
    Publish { published: u64, total: u64 },
}

/// What an apply did.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub plan_id: PlanId,
    pub events: u64,
    /// Published by this invocation (less than `events` when resuming).
    pub published_now: u64,
    /// Kept in the outbox because RabbitMQ failed; the workers relay them.
    pub kept_in_outbox: u64,
    /// Why RabbitMQ did not take them (redacted).
    pub broker_error: Option<String>,
    pub resumed: bool,
    /// Planned rows that changed since the check and were left alone.
    pub stale_rows: u64,
    pub backup_path: String,
    pub audit_id: i64,
    pub seconds: f64,
    /// Time of each step in seconds: backup, reset, publish (the last two side by side).
    pub steps: StepTimes,
    /// Where the events went instead of our workers (`queue:NAME`); a
    /// destination replay has no backup (`backup_path` is empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
}

/// Where an apply sends its plan's events, from the plan's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Our exchange: the rows are backed up and reset, our workers replay them.
    Workers,
    /// One subscriber's queue: nothing in this database is backed up or reset.
    Queue(String),
}

impl Target {
    pub fn of(plan: &SealedPlan) -> Self {
        match &plan.header.destination {
            None => Self::Workers,
            Some(Destination::Queue(queue)) => Self::Queue(queue.clone()),
        }
    }
}

/// How long each step of an apply took, in seconds (0 for a step a resumed
/// apply skips). The reset and the publish run side by side: each is timed
/// from the end of the backup.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StepTimes {
    pub backup: f64,
    pub reset: f64,
    pub publish: f64,
    /// The reset's chunk transactions: the 99th percentile and the longest.
    pub reset_chunk_p99: f64,
    pub longest_reset_chunk: f64,
}

/// Backs up, resets and republishes a checked plan, or, for a plan with a
/// destination queue, publishes its events to that queue alone ([`Target`]);
/// a stop says how far it got, as the run record holds it.
pub async fn execute(
    pool: &PgPool,
    endpoints: &Endpoints,
    checked: Checked,
    request: &Request,
    shutdown: &CancellationToken,
    progress: impl FnMut(Progress) + Send,
) -> Result<Outcome, ApplyError> {
    let plan = &checked.plan;
    if checked.run.is_some() {
        // The same apply again: a halt it stopped at no longer stands.
        runs::clear_halt(pool, plan.header.plan_id).await?;
    }
    let outcome = match Target::of(plan) {
        Target::Workers => run(pool, endpoints, &checked, request, shutdown, progress).await,
        Target::Queue(queue) => destination::run(pool, endpoints, &checked, request, &queue, shutdown, progress).await,
    };
    match outcome {
        Err(mut error) => {
            if let Some(reached) = error.reached_mut() {
                *reached = reached_now(pool, plan).await;
            }
            Err(error)
        }
        done => done,
    }
}

async fn run(
    pool: &PgPool,
    endpoints: &Endpoints,
    checked: &Checked,
    request: &Request,
    shutdown: &CancellationToken,
    progress: impl FnMut(Progress) + Send,
) -> Result<Outcome, ApplyError> {
    let started = Instant::now();
    let plan = &checked.plan;
    let plan_id = plan.header.plan_id;
    let total = plan.events() as u64;
    let resumed = checked.run.is_some();
    // The reset and the republish report from the same task, never at once,
    // so the lock is never contended; a Mutex (not a RefCell) keeps the
    // apply's future Send, for the console to run it as a task.
    let progress = std::sync::Mutex::new(progress);
    let progress = |p: Progress| (progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner))(p);
    // The broker connection opens while the backup runs.
    let broker = async {
        let connection = transport::connect(&endpoints.amqp_url, &format!("replay apply {plan_id}")).await?;
        let publisher = Publisher::open(&connection, endpoints).await?;
        Ok::<_, TransportError>((connection, publisher))
    };
    let begun = async {
        match &checked.run {
            Some(run) => Ok((run.clone(), 0.0)),
            None => reset::begin(pool, endpoints, checked, request, shutdown, &progress)
                .await
                .map(|b| (b.run, b.backup_seconds)),
        }
    };
    let (broker, begun) = tokio::join!(broker, begun);
    let (run, backup) = begun?;
    if resumed {
        // A halt held the parked rows from claimers: they may fall back again.
        let left = plan.events().saturating_sub(run.events_published() as usize);
        ledger::release_parked(pool, plan_id.as_uuid(), reset::fallback_time(left, request.rate)).await?;
    }

    let step = Instant::now();
    let already = run.events_published();
    let rows = plan.summary.rows as u64;
    let (connection, publisher) = match broker {
        Ok((connection, publisher)) => (Some(connection), Ok(publisher)),
        Err(error) => (None, Err(error)),
    };
    let (reset_through, watched) = tokio::sync::watch::channel(run.rows_reset(rows));
    // Cancelled when a canary halts the republish, so the reset stops too.
    let halting = shutdown.child_token();
    let resetting = async {
        // The sender goes when the reset ends, so a republish waiting for
        // rows that will not come (the reset stopped) stops too.
        let reset_through = reset_through;
        let done = reset::reset(pool, plan, &run, request, &halting, &reset_through, &progress).await;
        (done, step.elapsed().as_secs_f64())
    };
    let following = republish::ResetThrough { rows: watched, total: rows };
    let republishing = async {
        let sent = republish::republish(pool, plan, request, shutdown, publisher, already, following, &progress).await;
        if matches!(sent, Err(ApplyError::Halted { .. })) {
            halting.cancel();
        }
        sent
    };
    let ((reset, reset_seconds), sent) = tokio::join!(resetting, republishing);
    // A halt is the republish's own: the reset only stopped behind it. Its
    // parked rows wait for the same apply to run again, not for claimers.
    if let Err(halted @ ApplyError::Halted { .. }) = sent {
        ledger::hold_parked(pool, plan_id.as_uuid()).await?;
        return Err(halted);
    }
    // The reset's stop comes first: the republish only stopped behind it.
    let reset = reset?;
    let sent = sent?;
    if let (Some(connection), None) = (&connection, &sent.broker_error) {
        transport::close(connection, "apply done").await;
    }

    runs::advance(pool, plan_id, sent.published as i64).await?;
    runs::finish(pool, plan_id).await?;
    Ok(Outcome {
        plan_id,
        events: total,
        published_now: sent.published - already,
        kept_in_outbox: sent.kept_in_outbox,
        broker_error: sent.broker_error,
        resumed,
        stale_rows: reset.stale,
        backup_path: run.backup_path,
        audit_id: run.audit_id,
        seconds: started.elapsed().as_secs_f64(),
        steps: StepTimes {
            backup,
            reset: reset_seconds,
            publish: step.elapsed().as_secs_f64(),
            reset_chunk_p99: percentile(&reset.chunks, 0.99).as_secs_f64(),
            longest_reset_chunk: reset.chunks.last().copied().unwrap_or_default().as_secs_f64(),
        },
        destination: None,
    })
}

/// The `p` quantile (nearest rank) of sorted durations; zero for none.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).saturating_sub(1);
    sorted.get(rank).copied().unwrap_or_default()
}

/// How far the apply of `plan` got, from its run record (nothing yet
/// without one).
async fn reached_now(pool: &PgPool, plan: &SealedPlan) -> Reached {
    let (rows, events) = (plan.summary.rows as u64, plan.events() as u64);
    let run: Option<ReplayRun> = runs::find(pool, plan.header.plan_id).await.ok().flatten();
    let Some(run) = run else { return Reached { reset: 0, rows, published: 0, events } };
    Reached { reset: run.rows_reset(rows), rows, published: run.events_published(), events }
}

/// Whether the apply stops here, resumable, and why, in this order: it was
/// interrupted (a signal); the workers were paused (the operator or an
/// emergency stop is in charge); or, when the broker failed, it refused the
/// events (not an outage: waiting would not cure it). `None`: go on, which
/// after a broker failure means the outbox takes the rest. How far it got
/// is filled in by [`execute`].
async fn stop_here(
    pool: &PgPool,
    shutdown: &CancellationToken,
    broker_failure: Option<&TransportError>,
) -> Result<Option<ApplyError>, StoreError> {
    if shutdown.is_cancelled() {
        return Ok(Some(ApplyError::Interrupted(Reached::default())));
    }
    if let Some(pause) = pause::current(pool).await? {
        return Ok(Some(ApplyError::Paused { pause, reached: Reached::default() }));
    }
    Ok(match broker_failure {
        Some(error) if !error.is_outage() => {
            Some(ApplyError::BrokerRefused { reached: Reached::default(), cause: error.cause() })
        }
        _ => None,
    })
}
