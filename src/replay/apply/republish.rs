//! The republish: the plan's events, labelled with their plan, published
//! with confirms, paced, resumable; and the hand-off of what RabbitMQ did not
//! confirm to the outbox when it goes away.
//!
//! Invariant: a run is marked done only once every event of its plan is
//! confirmed by RabbitMQ or kept in the outbox (with its plan's label, which
//! the workers' relay publishes as the `x-replay-plan` header). An
//! interrupt, a pause or a broker refusal stops before that, with nothing
//! handed off, its progress recorded, and the same apply resumes; which of
//! them stops it is decided in one place, [`stop_here`].

use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{ApplyError, Progress, Request};
use crate::replay::plan::{PlanId, SealedPlan};
use crate::store::pause;
use crate::store::runs;
use crate::store::{ledger, outbox, StoreError};
use crate::wire::envelope::Event;
use crate::wire::publisher::Publisher;
use crate::wire::transport::TransportError;

/// Most events published between two progress records.
const MAX_BATCH: usize = 1_000;
/// Events read and kept per statement when the outbox takes over.
const HAND_OFF_BATCH: usize = 5_000;

/// Where the republish ended: every event confirmed, or the rest in the outbox.
pub(super) struct Republished {
    /// Events confirmed by RabbitMQ, this run and the runs before it.
    pub published: u64,
    /// Events handed to the outbox because RabbitMQ went away.
    pub kept_in_outbox: u64,
    /// Why RabbitMQ did not take the rest (redacted), if it did not.
    pub broker_error: Option<String>,
}

/// How far the publish loop got, and the broker's failure if it stopped there.
struct Confirmed {
    published: u64,
    failure: Option<TransportError>,
}

/// A batch of the plan's events, read from the ledger and labelled.
struct Batch {
    /// How many of the plan's events it stands for.
    planned: u64,
    events: Vec<Event>,
}

/// Publishes the plan's events from `already` on with `publisher` (or, if
/// RabbitMQ could not be reached, with nothing), and hands what it did not
/// confirm to the outbox if it went away.
pub(super) async fn republish(
    pool: &PgPool,
    plan: &SealedPlan,
    request: &Request,
    shutdown: &CancellationToken,
    publisher: Result<Publisher, TransportError>,
    already: u64,
    progress: &mut impl FnMut(Progress),
) -> Result<Republished, ApplyError> {
    let plan_id = plan.header.plan_id;
    let total = plan.events() as u64;
    let Confirmed { published, failure } = match publisher {
        Ok(publisher) => publish(pool, plan, request, shutdown, &publisher, already, progress).await?,
        Err(error) => Confirmed { published: already, failure: Some(error) },
    };
    let Some(error) = failure else {
        return Ok(Republished { published, kept_in_outbox: 0, broker_error: None });
    };
    // RabbitMQ went away mid-way: what it did not confirm goes to the
    // outbox, which the workers relay once it is back (with the plan's
    // header). A refusal, an interrupt or a pause stops here instead,
    // resumable, with nothing handed off.
    runs::advance(pool, plan_id, published as i64).await?;
    if let Some(stop) = stop_here(pool, shutdown, Some(&error), published, total).await? {
        return Err(stop);
    }
    tracing::warn!(error = %error, published, "RabbitMQ failed during the republish; keeping the rest in the outbox");
    let kept_in_outbox = hand_off(pool, plan, published, &error.cause()).await?;
    Ok(Republished { published, kept_in_outbox, broker_error: Some(error.cause()) })
}

/// Whether the republish stops here, resumable, and why, in this order: it
/// was interrupted (a signal); the workers were paused (the operator or an
/// emergency stop is in charge); or, when the broker failed, it refused the
/// events (not an outage: waiting would not cure it). `None`: go on, which
/// after a broker failure means the outbox takes the rest.
async fn stop_here(
    pool: &PgPool,
    shutdown: &CancellationToken,
    broker_failure: Option<&TransportError>,
    published: u64,
    total: u64,
) -> Result<Option<ApplyError>, StoreError> {
    if shutdown.is_cancelled() {
        return Ok(Some(ApplyError::Interrupted { published, total }));
    }
    if let Some(pause) = pause::current(pool).await? {
        return Ok(Some(ApplyError::Paused { pause, published, total }));
    }
    Ok(match broker_failure {
        Some(error) if !error.is_outage() => Some(ApplyError::BrokerRefused { published, total, cause: error.cause() }),
        _ => None,
    })
}

/// Publishes the plan's events from `already` on, paced and confirmed.
/// Returns how many are confirmed in all, and the broker's failure if it
/// stopped confirming (the rest is then the outbox's).
async fn publish(
    pool: &PgPool,
    plan: &SealedPlan,
    request: &Request,
    shutdown: &CancellationToken,
    publisher: &Publisher,
    already: u64,
    progress: &mut impl FnMut(Progress),
) -> Result<Confirmed, ApplyError> {
    let plan_id = plan.header.plan_id;
    let total = plan.events() as u64;
    // Paced: four batches a second, so the rate holds within a quarter second.
    let batch = request.rate.map_or(MAX_BATCH, |r| (r as usize / 4).clamp(1, MAX_BATCH));
    let mut published = already;
    let paced_from = Instant::now();
    let mut batches = plan.event_ids(batch)?;
    batches.skip_events(already)?;
    // While the broker confirms one batch, the next is released and read.
    let mut ready = match batches.next_batch()? {
        Some(ids) => Some(labelled(pool, ids, plan_id).await?),
        None => None,
    };
    // Each round publishes one batch while it reads the next and records
    // the progress of the one before.
    let record = |published: u64| async move { runs::advance(pool, plan_id, published as i64).await };
    while let Some(Batch { planned, events }) = ready.take() {
        if let Some(stop) = stop_here(pool, shutdown, None, published, total).await? {
            record(published).await?;
            return Err(stop);
        }
        let following = batches.next_batch()?;
        let (sent, next, recorded) = tokio::join!(
            publisher.publish_all(&events, |_| {}),
            async {
                match following {
                    Some(ids) => labelled(pool, ids, plan_id).await.map(Some),
                    None => Ok(None),
                }
            },
            record(published)
        );
        recorded?;
        if let Err(failure) = sent {
            return Ok(Confirmed { published, failure: Some(failure) });
        }
        published += planned;
        progress(Progress { published, total });
        ready = next?;
        if let Some(rate) = request.rate {
            let due = paced_from + Duration::from_secs_f64((published - already) as f64 / f64::from(rate));
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }
    Ok(Confirmed { published, failure: None })
}

/// Keeps the plan's events from `from` on in the outbox, with the plan's
/// label, and returns how many: the workers' relay publishes them.
async fn hand_off(pool: &PgPool, plan: &SealedPlan, from: u64, reason: &str) -> Result<u64, ApplyError> {
    let mut batches = plan.event_ids(HAND_OFF_BATCH)?;
    batches.skip_events(from)?;
    let mut kept = 0;
    while let Some(ids) = batches.next_batch()? {
        let Batch { events, .. } = labelled(pool, ids, plan.header.plan_id).await?;
        outbox::keep(pool, &events, reason).await?;
        kept += events.len() as u64;
    }
    Ok(kept)
}

/// Reads a batch's events to publish, labelled with their plan.
async fn labelled(pool: &PgPool, ids: Vec<String>, plan: PlanId) -> Result<Batch, StoreError> {
    let events = ledger::events(pool, &ids).await?;
    let events = events.into_iter().map(|e| Event { replay_plan: Some(plan), ..e }).collect();
    Ok(Batch { planned: ids.len() as u64, events })
}
