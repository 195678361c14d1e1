//! Taking the queue, streamed: once no consumer holds a delivery, one
//! consumer with a bounded prefetch ([`PREFETCH`]) hands the messages over
//! in batches of up to [`BATCH`], each sorted into the replay's messages (by
//! their `x-replay-plan` header, which [`envelope::replay_plan`] reads),
//! dropped, and the others, read as events to keep (or dead letters, if they
//! are not events). Memory is bounded by the prefetch, whatever the depth.
//!
//! The take ends when as many messages were delivered as the queue held
//! when it began (traffic published since is the workers' on resume), or
//! earlier when no delivery came for [`IDLE`] and the queue reports none
//! ready. It then cancels its consumer and takes what the broker had already
//! sent: lapin yields those deliveries, then ends the stream.
//!
//! Invariant: a batch is acked only by [`Taker::ack`], which the stop calls
//! once what must survive of the batch is committed; if the stop dies first,
//! the connection closes and the broker puts every unacked message back.

use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;

use crate::config::Endpoints;
use crate::replay::plan::PlanId;
use crate::store::dead_letters::DeadLetter;
use crate::wire::envelope::{self, Event, ReplayHeader};
use crate::wire::transport::{self, TransportError};

/// Deliveries sorted, kept in one transaction and acked together.
pub const BATCH: usize = 2_000;
/// Deliveries the broker may hand over unacked: two batches, so the next
/// one streams in while the last one is committed, and no more.
pub const PREFETCH: u16 = 2 * BATCH as u16;
/// How long no delivery must come before the take asks the queue whether it is empty.
const IDLE: Duration = Duration::from_millis(100);

/// One batch taken off the queue, sorted, unacked.
pub(super) struct Batch {
    /// The replay's messages: dropped when the batch is acked.
    pub replay: usize,
    /// The other messages that are events, to be kept as pending.
    pub events: Vec<Event>,
    /// The other messages that are not events, to be dead-lettered.
    pub dead: Vec<DeadLetter>,
    /// The last delivery's tag: acking through it acks the whole batch.
    last_tag: u64,
}

enum Phase {
    Consuming,
    /// The consumer is cancelled; what the broker had sent is still to come.
    Cancelled,
    Done,
}

/// The queue being taken: the consumer and the deliveries it holds unacked.
pub(super) struct Taker {
    connection: lapin::Connection,
    channel: lapin::Channel,
    consumer: lapin::Consumer,
    endpoints: Endpoints,
    /// The partition queue being taken.
    queue: String,
    plan: Option<PlanId>,
    /// Ready messages when the take began.
    ready_at_start: u64,
    delivered: u64,
    phase: Phase,
}

impl Taker {
    /// Waits until the partition queue `queue` has no consumer (the paused
    /// workers closed theirs, so no message is held unacked elsewhere), then
    /// consumes it. The replay's messages are those of `plan`, or of any plan.
    pub async fn open(
        endpoints: &Endpoints,
        queue: &str,
        wait: Duration,
        plan: Option<PlanId>,
    ) -> Result<Self, TransportError> {
        let connection = transport::connect(&endpoints.amqp_url, "replay emergency-stop").await?;
        match consume(&connection, queue, wait).await {
            Ok((channel, consumer, ready)) => Ok(Self {
                connection,
                channel,
                consumer,
                endpoints: endpoints.clone(),
                queue: queue.to_string(),
                plan,
                ready_at_start: u64::from(ready),
                delivered: 0,
                phase: Phase::Consuming,
            }),
            Err(e) => {
                transport::close(&connection, "emergency stop: queue not taken").await;
                Err(e)
            }
        }
    }

    /// The next batch, sorted; `None` once the queue is taken.
    pub async fn next_batch(&mut self) -> Result<Option<Batch>, TransportError> {
        let mut deliveries = Vec::new();
        loop {
            match self.phase {
                Phase::Done => break,
                Phase::Cancelled => {
                    while deliveries.len() < BATCH {
                        let next = transport::answer(
                            "take the last deliveries",
                            self.consumer.next().map(Ok::<_, lapin::Error>),
                        )
                        .await?;
                        match next {
                            Some(next) => deliveries.push(delivered(Some(next))?),
                            None => {
                                self.phase = Phase::Done;
                                break;
                            }
                        }
                    }
                    break;
                }
                Phase::Consuming if self.delivered >= self.ready_at_start => self.cancel().await?,
                Phase::Consuming => match tokio::time::timeout(IDLE, self.consumer.next()).await {
                    Ok(next) => {
                        deliveries.push(delivered(next)?);
                        // What has already arrived, without waiting.
                        while deliveries.len() < BATCH {
                            match self.consumer.next().now_or_never() {
                                Some(next) => deliveries.push(delivered(next)?),
                                None => break,
                            }
                        }
                        break;
                    }
                    Err(_) => self.look_at_the_queue().await?,
                },
            }
        }
        if deliveries.is_empty() {
            return Ok(None);
        }
        self.delivered += deliveries.len() as u64;
        Ok(Some(self.sort(&deliveries)))
    }

    /// Acks every delivery of `batch` (and of the batches before it).
    pub async fn ack(&self, batch: &Batch) -> Result<(), TransportError> {
        transport::ack_through(&self.channel, batch.last_tag).await
    }

    /// Closes the connection: whatever is still unacked goes back to the queue.
    pub async fn close(self) {
        transport::close(&self.connection, "emergency stop: queue taken").await;
    }

    /// Nothing came for a while: the queue is taken if it holds no ready
    /// message. A second consumer (our own is one) would be active in our
    /// stead on a single-active-consumer queue and hold what we wait for.
    async fn look_at_the_queue(&mut self) -> Result<(), TransportError> {
        let counts = transport::queue_counts(&self.channel, &self.queue).await?;
        if counts.consumers > 1 {
            return Err(TransportError::StillConsumed { queue: self.queue.clone(), consumers: counts.consumers - 1 });
        }
        if counts.messages == 0 {
            self.cancel().await?;
        }
        Ok(())
    }

    async fn cancel(&mut self) -> Result<(), TransportError> {
        transport::answer(
            format!("stop taking messages from '{}'", self.queue),
            self.channel.basic_cancel(self.consumer.tag(), BasicCancelOptions::default()),
        )
        .await?;
        self.phase = Phase::Cancelled;
        Ok(())
    }

    /// Sorts deliveries into the replay's and the others, read.
    fn sort(&self, deliveries: &[Delivery]) -> Batch {
        let (replay, others): (Vec<&Delivery>, Vec<&Delivery>) =
            deliveries.iter().partition(|d| is_replay_message(envelope::replay_plan(&d.properties), self.plan));
        let crate::worker::ReadBatch { events, dead } = crate::worker::read_batch(others, &self.endpoints, usize::MAX);
        let last_tag = deliveries.last().map_or(0, |d| d.delivery_tag);
        Batch { replay: replay.len(), events, dead, last_tag }
    }
}

/// Waits up to `wait` for the queue to have no consumer, then opens ours.
/// Returns the channel, the consumer and how many messages were ready.
async fn consume(
    connection: &lapin::Connection,
    queue: &str,
    wait: Duration,
) -> Result<(lapin::Channel, lapin::Consumer, u32), TransportError> {
    let channel = transport::channel(connection).await?;
    let deadline = Instant::now() + wait;
    let ready = loop {
        let counts = transport::queue_counts(&channel, queue).await?;
        if counts.consumers == 0 {
            break counts.messages;
        }
        if Instant::now() >= deadline {
            // A consumer still holds deliveries the take cannot see; it
            // would put them back after it. Not taking is the safe side.
            return Err(TransportError::StillConsumed { queue: queue.to_string(), consumers: counts.consumers });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    transport::answer("set prefetch", channel.basic_qos(PREFETCH, BasicQosOptions::default())).await?;
    let consumer = transport::answer(
        format!("take messages from '{queue}'"),
        channel.basic_consume(
            queue.into(),
            "replay-emergency-stop".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    Ok((channel, consumer, ready))
}

fn delivered(next: Option<lapin::Result<Delivery>>) -> Result<Delivery, TransportError> {
    match next {
        Some(Ok(delivery)) => Ok(delivery),
        Some(Err(source)) => Err(TransportError::Broker { action: "take messages".into(), source }),
        None => Err(TransportError::ConsumerClosed),
    }
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
