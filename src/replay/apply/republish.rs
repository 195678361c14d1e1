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
//! - An event handed over by the reset ([`Handed`]) is the one the ledger
//!   holds: a row's event (id, type, payload, time, key) is written once,
//!   at insert, and never updated.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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

/// Most events the reset keeps handed over for the republish at once
/// (some megabytes): past it, it hands nothing more over until the
/// republish took some, and the republish reads the others by id.
const HANDED_OVER_MAX: usize = 5_000;

/// The events of rows the reset has just reset, handed over so that the
/// republish need not read them back from the ledger (a random lookup of
/// the event id index each, about a fifth of the reset's own cost per row).
/// Neither side ever waits on it: when it is full the reset hands nothing
/// over, and the republish reads whatever it does not find.
#[derive(Clone, Debug, Default)]
pub(super) struct Handed(Arc<Mutex<HashMap<String, Event>>>);

impl Handed {
    /// Hands `events` over, all of them or, if they do not fit, none.
    pub(super) fn offer(&self, events: Vec<Event>) {
        let mut handed = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if handed.len() + events.len() <= HANDED_OVER_MAX {
            handed.extend(events.into_iter().map(|e| (e.event_id.clone(), e)));
        }
    }

    /// Takes the events of `ids` that were handed over, in `ids`' order
    /// (`None` where one was not).
    fn take(&self, ids: &[String]) -> Vec<Option<Event>> {
        let mut handed = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        ids.iter().map(|id| handed.remove(id)).collect()
    }
}

/// How far the reset got, as the republish follows it.
pub(super) struct ResetThrough {
    pub rows: watch::Receiver<u64>,
    /// Every row of the plan: once reached, the reset is complete.
    pub total: u64,
    /// The events of the rows reset, for the republish to take.
    pub handed: Handed,
}

impl ResetThrough {
    /// Every row counted as reset: for a publish no reset precedes (a
    /// destination replay resets nothing).
    pub(super) fn complete(total: u64) -> Self {
        let (sender, rows) = watch::channel(total);
        // A receiver keeps the last value once its sender is gone.
        drop(sender);
        Self { rows, total, handed: Handed::default() }
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
        Some(ids) => Some(labelled(pool, &reset.handed, ids, plan_id).await?),
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
        let (handed, mut rows_reset, total_rows) = (&reset.handed, reset.rows.clone(), reset.total);
        let (sent, next, recorded) = tokio::join!(
            publisher.publish_all(&events, |_| {}),
            async {
                let Some(ids) = following else { return Ok(None) };
                // Read once its rows are reset, so that their events are
                // the ones the reset handed over. If the reset stops first,
                // read anyway: the check at the top of the loop stops.
                let through = (published + planned + ids.len() as u64).min(total_rows);
                let _ = rows_reset.wait_for(|reset| *reset >= through).await;
                labelled(pool, handed, ids, plan_id).await.map(Some)
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
        let Batch { events, .. } = labelled(pool, &Handed::default(), ids, plan.header.plan_id).await?;
        outbox::keep(pool, &events, reason).await?;
        kept += events.len() as u64;
    }
    Ok(kept)
}

/// A batch's events to publish, in `ids`' order, labelled with their plan:
/// those `handed` over by the reset, the others read from the ledger (an
/// id it does not hold is left out, as [`ledger::events`] leaves it out).
pub(super) async fn labelled(
    pool: &PgPool,
    handed: &Handed,
    ids: Vec<String>,
    plan: PlanId,
) -> Result<Batch, StoreError> {
    let mut found = handed.take(&ids);
    let missing: Vec<String> =
        ids.iter().zip(&found).filter(|(_, event)| event.is_none()).map(|(id, _)| id.clone()).collect();
    if !missing.is_empty() {
        let mut read: HashMap<String, Event> =
            ledger::events(pool, &missing).await?.into_iter().map(|e| (e.event_id.clone(), e)).collect();
        for (slot, id) in found.iter_mut().zip(&ids) {
            if slot.is_none() {
                *slot = read.remove(id);
            }
        }
    }
    let events = found.into_iter().flatten().map(|e| Event { replay_plan: Some(plan), ..e }).collect();
    Ok(Batch { planned: ids.len() as u64, events })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> Event {
        let payload = serde_json::json!({"n": n});
        Event::new(format!("e{n}"), "member.noted".into(), chrono::Utc::now(), payload).expect("an event")
    }

    #[test]
    fn handed_over_events_come_back_once_in_the_order_asked() {
        let handed = Handed::default();
        handed.offer((0..3).map(event).collect());
        let ids: Vec<String> = ["e2", "e9", "e0"].iter().map(|s| s.to_string()).collect();
        let taken: Vec<Option<String>> = handed.take(&ids).into_iter().map(|e| e.map(|e| e.event_id)).collect();
        assert_eq!(taken, vec![Some("e2".to_string()), None, Some("e0".to_string())]);
        assert!(handed.take(&ids).iter().all(Option::is_none), "taken once");
    }

    #[test]
    fn a_full_hand_over_takes_nothing_more_until_the_republish_takes_some() {
        let handed = Handed::default();
        handed.offer((0..HANDED_OVER_MAX).map(event).collect());
        handed.offer(vec![event(HANDED_OVER_MAX)]);
        let last = vec![format!("e{HANDED_OVER_MAX}")];
        assert!(handed.take(&last)[0].is_none(), "refused while full");
        assert!(handed.take(&["e0".to_string()])[0].is_some());
        handed.offer(vec![event(HANDED_OVER_MAX)]);
        assert!(handed.take(&last)[0].is_some(), "taken once there is room");
    }
}
