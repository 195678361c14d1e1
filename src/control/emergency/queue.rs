//! Taking the replay off the queue: once no consumer holds a delivery,
//! every ready message is taken, unacked; the replay's are dropped (by their
//! `x-replay-plan` header, which [`envelope::replay_plan`] reads), the rest
//! read as events to keep (or dead letters, if they are not events).
//!
//! Invariant: nothing taken is acked here. [`Held::ack_all`] is called only
//! once what must survive of the taken messages is committed; if the stop
//! dies first, the channel closes and the broker puts every message back.

use std::time::{Duration, Instant};

use crate::config::Endpoints;
use crate::replay::plan::PlanId;
use crate::store::dead_letters::DeadLetter;
use crate::wire::envelope::{self, Event, ReplayHeader};
use crate::wire::transport::{self, TransportError};

/// The connection the taken messages are held on, unacked.
pub(super) struct Held {
    connection: lapin::Connection,
    channel: lapin::Channel,
    /// The last delivery's tag; `None` when the queue was empty.
    last: Option<u64>,
}

impl Held {
    /// Acks every message taken, then closes the connection; nothing to do
    /// when none was taken.
    pub async fn ack_all(&self) -> Result<(), TransportError> {
        let Some(last) = self.last else { return Ok(()) };
        let acked = transport::ack_through(&self.channel, last).await;
        transport::close(&self.connection, "emergency stop done").await;
        acked
    }
}

/// What was taken off the queue.
pub(super) struct Taken {
    pub held: Held,
    /// The replay's messages, dropped.
    pub replay: usize,
    /// The other messages, to be kept: `events` and `dead` together.
    pub others: usize,
    /// The other messages that are events, to be kept as pending.
    pub events: Vec<Event>,
    /// The other messages that are not events, to be dead-lettered.
    pub dead: Vec<DeadLetter>,
}

/// Waits until the queue has no consumer (the paused workers closed theirs,
/// so no message is held unacked elsewhere), then takes every message and
/// sorts the replay's (of `plan`, or of any plan) from the rest.
pub(super) async fn take(endpoints: &Endpoints, wait: Duration, plan: Option<PlanId>) -> Result<Taken, TransportError> {
    let connection = transport::connect(&endpoints.amqp_url, "replay emergency-stop").await?;
    let channel = transport::channel(&connection).await?;
    let deadline = Instant::now() + wait;
    loop {
        let consumers = transport::queue_counts(&channel, &endpoints.queue).await?.consumers;
        if consumers == 0 {
            break;
        }
        if Instant::now() >= deadline {
            // A consumer still holds deliveries the purge cannot see; it
            // would put them back after the purge. Not purging is the safe side.
            return Err(TransportError::StillConsumed { queue: endpoints.queue.clone(), consumers });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deliveries = transport::take_all(&channel, &endpoints.queue).await?;
    let (replay, others): (Vec<_>, Vec<_>) =
        deliveries.iter().partition(|d| is_replay_message(envelope::replay_plan(&d.properties), plan));
    let crate::worker::ReadBatch { events, dead } =
        crate::worker::read_batch(others.iter().copied(), endpoints, usize::MAX);
    let last = deliveries.last().map(|d| d.delivery_tag);
    Ok(Taken { replay: replay.len(), others: others.len(), events, dead, held: Held { connection, channel, last } })
}

/// A message is the replay's when it carries the plan's header (any plan's,
/// when no plan is named).
fn is_replay_message(header: ReplayHeader, plan: Option<PlanId>) -> bool {
    match (header, plan) {
        (ReplayHeader::Absent, _) => false,
        (_, None) => true,
        (ReplayHeader::Plan(found), Some(wanted)) => found == wanted,
        (ReplayHeader::Unreadable, Some(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_message_is_the_named_plans_or_any_plans_when_none_is_named() {
        let (ours, theirs) = (PlanId::random(), PlanId::random());
        assert!(is_replay_message(ReplayHeader::Plan(ours), Some(ours)));
        assert!(!is_replay_message(ReplayHeader::Plan(theirs), Some(ours)));
        assert!(is_replay_message(ReplayHeader::Plan(theirs), None));
        // A header replay did not write is some replay's, of no plan that can be named.
        assert!(is_replay_message(ReplayHeader::Unreadable, None));
        assert!(!is_replay_message(ReplayHeader::Unreadable, Some(ours)));
        assert!(!is_replay_message(ReplayHeader::Absent, None));
        assert!(!is_replay_message(ReplayHeader::Absent, Some(ours)));
    }
}
