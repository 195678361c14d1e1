//! The republish: the plan's events, labelled with their plan, published
//! with confirms, paced, resumable, right behind the reset; and the hand-off
//! of what RabbitMQ did not confirm to the outbox when it goes away.
//!
//! Invariants:
//! - An event is published (or handed to the outbox) only once its row is
//!   reset: the republish waits on the reset's progress (`reset_through`),
//!   and stops, its progress recorded, if the reset stops first.
//! - A run is marked done only once every event of its plan is confirmed by
//!   RabbitMQ or kept in the outbox (with its plan's label, which the
//!   workers' relay publishes as the `x-replay-plan` header). An interrupt,
//!   a pause or a broker refusal stops before that, with nothing handed off,
//!   its progress recorded, and the same apply resumes; which of them stops
//!   it is decided in one place, [`stop_here`].
//! - With a canary (`canary`), the first phase publishes exactly the
//!   canary's events and nothing more until they settled within the rate;
//!   the rest is then published with the plan's failures checked every few
//!   batches. A broker failure before the canary passed halts (the canary
//!   could not be watched); after it, the rest goes to the outbox as above.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::canary::{self, Canary, Guard};
use super::{stop_here, ApplyError, Progress, Reached, Request};
use crate::replay::plan::{EventIds, PlanError, PlanId, SealedPlan};
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
pub(super) struct Confirmed {
    pub published: u64,
    pub failure: Option<TransportError>,
}

/// A batch of the plan's events, read from the ledger and labelled.
pub(super) struct Batch {
    /// How many of the plan's events it stands for.
    planned: u64,
    pub events: Vec<Event>,
}

/// How far the reset got, as the republish follows it.
pub(super) struct ResetThrough {
    pub rows: watch::Receiver<u64>,
    /// Every row of the plan: once reached, the reset is complete.
    pub total: u64,
}

impl ResetThrough {
    /// Every row counted as reset: for a publish no reset precedes (a
    /// destination replay resets nothing).
    pub(super) fn complete(total: u64) -> Self {
        let (sender, rows) = watch::channel(total);
        // A receiver keeps the last value once its sender is gone.
        drop(sender);
        Self { rows, total }
    }

    /// Waits until the first `rows` rows of the plan (all of them, at most)
    /// are reset. If the reset stops first, so does the republish: the error
    /// is never shown, the reset's own is ([`super::execute`]).
    async fn reached(&mut self, rows: u64) -> Result<(), ApplyError> {
        let wanted = rows.min(self.total);
        match self.rows.wait_for(|reset| *reset >= wanted).await {
            Ok(_) => Ok(()),
            Err(_) => Err(ApplyError::Interrupted(Reached::default())),
        }
    }
}

/// Publishes the plan's events from `already` on with `publisher` (or, if
/// RabbitMQ could not be reached, with nothing), each once its row is reset,
/// and hands what it did not confirm to the outbox if it went away.
#[allow(clippy::too_many_arguments)]
pub(super) async fn republish(
    pool: &PgPool,
    plan: &SealedPlan,
    request: &Request,
    shutdown: &CancellationToken,
    publisher: Result<Publisher, TransportError>,
    already: u64,
    mut reset: ResetThrough,
    progress: &impl Fn(Progress),
) -> Result<Republished, ApplyError> {
    let plan_id = plan.header.plan_id;
    let total = plan.events() as u64;
    let Confirmed { published, failure } = match (publisher, &request.canary) {
        (Ok(publisher), None) => {
            publish(pool, plan, request, shutdown, &publisher, (already, total), None, &mut reset, progress).await?
        }
        (Ok(publisher), Some(canary)) => {
            watched(pool, plan, request, canary, shutdown, &publisher, already, &mut reset, progress).await?
        }
        (Err(error), Some(canary)) if already < canary.events.min(total) => {
            return Err(broken_canary(pool, plan, request, canary, shutdown, already, &error).await?);
        }
        (Err(error), _) => Confirmed { published: already, failure: Some(error) },
    };
    let Some(error) = failure else {
        return Ok(Republished { published, kept_in_outbox: 0, broker_error: None });
    };
    // RabbitMQ went away mid-way: what it did not confirm goes to the
    // outbox, which the workers relay once it is back (with the plan's
    // header). A refusal, an interrupt or a pause stops here instead,
    // resumable, with nothing handed off.
    runs::advance(pool, plan_id, published as i64).await?;
    if let Some(stop) = stop_here(pool, shutdown, Some(&error)).await? {
        return Err(stop);
    }
    tracing::warn!(error = %error, published, "RabbitMQ failed during the republish; keeping the rest in the outbox once reset");
    reset.reached(reset.total).await?;
    let kept_in_outbox = hand_off(pool, plan, published, &error.cause()).await?;
    Ok(Republished { published, kept_in_outbox, broker_error: Some(error.cause()) })
}

/// A canary apply's republish: the canary (or, resumed past it, the plan's
/// failed rows retried), judged, then the rest under a [`Guard`].
#[allow(clippy::too_many_arguments)]
async fn watched(
    pool: &PgPool,
    plan: &SealedPlan,
    request: &Request,
    canary: &Canary,
    shutdown: &CancellationToken,
    publisher: &Publisher,
    already: u64,
    reset: &mut ResetThrough,
    progress: &impl Fn(Progress),
) -> Result<Confirmed, ApplyError> {
    let plan_id = plan.header.plan_id;
    let total = plan.events() as u64;
    let first = canary.events.min(total);
    if already < first {
        let sent = publish(pool, plan, request, shutdown, publisher, (already, first), None, reset, progress).await?;
        if let Some(error) = sent.failure {
            return Err(broken_canary(pool, plan, request, canary, shutdown, sent.published, &error).await?);
        }
        runs::advance(pool, plan_id, sent.published as i64).await?;
        let ids = plan.event_ids(first as usize)?.next_batch()?.unwrap_or_default();
        canary::judge(pool, plan, request, canary, shutdown, &ids, "canary").await?;
    } else {
        let retried = canary::retry_failed(pool, plan, request, canary, shutdown, publisher).await?;
        if !retried.is_empty() {
            canary::judge(pool, plan, request, canary, shutdown, &retried, "retried canary").await?;
        }
    }
    let mut guard = Guard::new(*canary);
    let from = already.max(first);
    publish(pool, plan, request, shutdown, publisher, (from, total), Some(&mut guard), reset, progress).await
}

/// A broker failure before the canary passed: a refusal stops as without a
/// canary; an outage halts, since the canary could not be watched.
async fn broken_canary(
    pool: &PgPool,
    plan: &SealedPlan,
    request: &Request,
    canary: &Canary,
    shutdown: &CancellationToken,
    published: u64,
    error: &TransportError,
) -> Result<ApplyError, ApplyError> {
    runs::advance(pool, plan.header.plan_id, published as i64).await?;
    if let Some(stop) = stop_here(pool, shutdown, Some(error)).await? {
        return Ok(stop);
    }
    let reason = format!("during the canary: RabbitMQ failed ({}), so the canary could not be watched", error.cause());
    Ok(canary::halt(pool, plan, request, canary, reason, &Default::default()).await?)
}

/// Publishes the plan's events `from` through `until` (exclusive), paced
/// and confirmed, each batch once its rows are reset, halting if `guard`
/// says so. Returns how many are confirmed in all, and the broker's failure
/// if it stopped confirming (the rest is then the outbox's).
#[allow(clippy::too_many_arguments)]
pub(super) async fn publish(
    pool: &PgPool,
    plan: &SealedPlan,
    request: &Request,
    shutdown: &CancellationToken,
    publisher: &Publisher,
    (already, until): (u64, u64),
    mut guard: Option<&mut Guard>,
    reset: &mut ResetThrough,
    progress: &impl Fn(Progress),
) -> Result<Confirmed, ApplyError> {
    let plan_id = plan.header.plan_id;
    let total = plan.events() as u64;
    // Paced: four batches a second, so the rate holds within a quarter second.
    let batch = request.rate.map_or(MAX_BATCH, |r| (r as usize / 4).clamp(1, MAX_BATCH));
    let mut published = already;
    let paced_from = Instant::now();
    let mut batches = plan.event_ids(batch)?;
    batches.skip_events(already)?;
    let mut read = already;
    // While the broker confirms one batch, the next is released and read.
    let mut ready = match next_until(&mut batches, &mut read, until)? {
        Some(ids) => Some(labelled(pool, ids, plan_id).await?),
        None => None,
    };
    // Each round publishes one batch while it reads the next and records
    // the progress of the one before.
    let record = |published: u64| async move { runs::advance(pool, plan_id, published as i64).await };
    while let Some(Batch { planned, events }) = ready.take() {
        if let Some(stop) = stop_here(pool, shutdown, None).await? {
            record(published).await?;
            return Err(stop);
        }
        if let Some(guard) = guard.as_deref_mut() {
            if let Some(halt) = guard.check(pool, plan, request).await? {
                record(published).await?;
                return Err(halt);
            }
        }
        if let Err(stopped) = reset.reached(published + planned).await {
            record(published).await?;
            return Err(stopped);
        }
        let following = next_until(&mut batches, &mut read, until)?;
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
        progress(Progress::Publish { published, total });
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

/// The next batch of event ids, cut at `until`; none once `read` reached it.
fn next_until(batches: &mut EventIds<'_>, read: &mut u64, until: u64) -> Result<Option<Vec<String>>, PlanError> {
    if *read >= until {
        return Ok(None);
    }
    let Some(mut ids) = batches.next_batch()? else { return Ok(None) };
    ids.truncate(usize::try_from(until - *read).unwrap_or(usize::MAX));
    *read += ids.len() as u64;
    Ok(Some(ids))
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
pub(super) async fn labelled(pool: &PgPool, ids: Vec<String>, plan: PlanId) -> Result<Batch, StoreError> {
    let events = ledger::events(pool, &ids).await?;
    let events = events.into_iter().map(|e| Event { replay_plan: Some(plan), ..e }).collect();
    Ok(Batch { planned: ids.len() as u64, events })
}
