//! A destination replay (`replay plan --destination queue:NAME`): the plan's
//! events, read from the ledger, published straight to one subscriber's
//! queue through the default exchange, with confirms, `mandatory` and the
//! `x-replay-plan` header, paced and resumable like the republish.
//!
//! Invariants:
//! - Our database does not change beyond the control plane: no backup is
//!   taken (there is nothing to restore), no ledger row is reset and no
//!   workflow runs (`replay plan` refuses a workflow with a destination).
//!   The audit entry (with its `destination`) and the run record commit
//!   together as in every apply.
//! - The queue must exist: it is looked at (a passive declare) before
//!   anything is recorded, and a missing one is a refusal that changes
//!   nothing. The queue is never declared here: it is its subscriber's.
//! - Nothing goes to the outbox: the workers' relay publishes to our
//!   exchange, not to the subscriber. A broker that goes away stops the
//!   apply ([`ApplyError::BrokerLost`]), resumable after its last confirmed
//!   batch; a pause or an interrupt stops it between batches, as always.

use std::time::Instant;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::republish::{self, Confirmed, ResetThrough};
use super::reset;
use super::{stop_here, ApplyError, Checked, Outcome, Progress, Reached, Refusal, Request, StepTimes};
use crate::config::Endpoints;
use crate::store::runs;
use crate::wire::publisher::Publisher;
use crate::wire::{topology, transport};

/// What the run record holds as the backup of a destination replay: none.
const NO_BACKUP: &str = "";

/// Checks the queue, records the apply (no backup, no reset), then publishes
/// the plan's events to `queue` from where an earlier run stopped.
pub(super) async fn run(
    pool: &PgPool,
    endpoints: &Endpoints,
    checked: &Checked,
    request: &Request,
    queue: &str,
    shutdown: &CancellationToken,
    progress: impl FnMut(Progress) + Send,
) -> Result<Outcome, ApplyError> {
    let started = Instant::now();
    // As in the republish: a Mutex keeps the apply's future Send.
    let progress = std::sync::Mutex::new(progress);
    let progress = |p: Progress| (progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner))(p);
    let plan = &checked.plan;
    let plan_id = plan.header.plan_id;
    let total = plan.events() as u64;
    if request.canary.is_some() {
        return Err(Refusal::CanaryToDestination.into());
    }
    let connection = transport::connect(&endpoints.amqp_url, &format!("replay apply {plan_id} to {queue}")).await?;
    if topology::counts(&connection, queue).await?.is_none() {
        transport::close(&connection, "no such queue").await;
        return Err(Refusal::NoSuchQueue { queue: queue.to_string() }.into());
    }
    let publisher = Publisher::to_queue(&connection, queue).await?;
    let resumed = checked.run.is_some();
    let run = match &checked.run {
        Some(run) => run.clone(),
        None => {
            if let Some(stop) = stop_here(pool, shutdown, None).await? {
                return Err(stop);
            }
            let run = reset::record(pool, plan, request, NO_BACKUP).await?;
            // Nothing to reset: the run goes straight to publishing.
            runs::reset_done(pool, plan_id).await?;
            tracing::info!(plan = %plan_id, audit = run.audit_id, queue, "destination replay recorded; publishing");
            run
        }
    };

    let step = Instant::now();
    let already = run.events_published();
    let mut everything_reset = ResetThrough::complete(plan.summary.rows as u64);
    let Confirmed { published, failure } = republish::publish(
        pool,
        plan,
        request,
        shutdown,
        &publisher,
        (already, total),
        None,
        &mut everything_reset,
        &progress,
    )
    .await?;
    runs::advance(pool, plan_id, published as i64).await?;
    if let Some(error) = failure {
        if let Some(stop) = stop_here(pool, shutdown, Some(&error)).await? {
            return Err(stop);
        }
        return Err(ApplyError::BrokerLost { reached: Reached::default(), cause: error.cause() });
    }
    transport::close(&connection, "apply done").await;
    runs::finish(pool, plan_id).await?;
    Ok(Outcome {
        plan_id,
        events: total,
        published_now: published - already,
        kept_in_outbox: 0,
        broker_error: None,
        resumed,
        stale_rows: 0,
        backup_path: run.backup_path,
        audit_id: run.audit_id,
        seconds: started.elapsed().as_secs_f64(),
        steps: StepTimes { publish: step.elapsed().as_secs_f64(), ..StepTimes::default() },
        destination: plan.header.destination.as_ref().map(ToString::to_string),
    })
}
