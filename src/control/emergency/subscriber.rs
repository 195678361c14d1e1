//! A destination replay's messages taken out of its subscriber's queue
//! (`replay emergency-stop --plan` of a plan applied with `--destination
//! queue:NAME`): the plan's messages only, by their `x-replay-plan` header;
//! every other message of that queue goes back, in its order.
//!
//! The subscriber's consumers are not ours to pause, so the queue is read
//! beside them: one consumer of ours takes the messages the queue held when
//! it began; each of the plan's is acked (removed) at once; every other is
//! held unacked, so the broker does not hand it to us again, until the end,
//! when one `basic.nack` (multiple, requeue) gives them all back. RabbitMQ
//! puts a requeued message back in its original position where it can
//! (classic queues) and marks it redelivered. Only delivery tags are kept,
//! never bodies, so memory does not grow with the messages' size.
//!
//! What this cannot reach, and says: messages the subscriber's own
//! consumers already hold unacked, and a queue whose single active consumer
//! is the subscriber's (ours then waits as a standby and is handed nothing).
//!
//! Invariant: a message is acked here only if it carries this plan's
//! header; if the stop dies mid-way, its connection closes and the broker
//! puts every held message back, so nothing else is lost.

use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions};
use lapin::types::FieldTable;

use crate::config::Endpoints;
use crate::replay::plan::PlanId;
use crate::wire::envelope::{self, ReplayHeader};
use crate::wire::transport::{self, TransportError};

/// How long no delivery must come before the queue is looked at again.
const IDLE: Duration = Duration::from_millis(200);

/// What was taken out of the subscriber's queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removal {
    /// The plan's messages, removed.
    pub removed: u64,
    /// Other messages, given back to the queue.
    pub returned: u64,
    /// Ready messages still in the queue when the take gave up (a
    /// single-active-consumer queue whose active consumer is the subscriber's).
    pub unreachable: u64,
}

/// Removes `plan`'s messages from `queue`, giving up after `wait` without a
/// delivery while messages are still ready.
pub async fn remove(
    endpoints: &Endpoints,
    queue: &str,
    plan: PlanId,
    wait: Duration,
) -> Result<Removal, TransportError> {
    let connection = transport::connect(&endpoints.amqp_url, "replay emergency-stop (subscriber queue)").await?;
    let removed = take(&connection, queue, plan, wait).await;
    transport::close(&connection, "emergency stop: subscriber queue taken").await;
    removed
}

async fn take(
    connection: &lapin::Connection,
    queue: &str,
    plan: PlanId,
    wait: Duration,
) -> Result<Removal, TransportError> {
    let channel = transport::channel(connection).await?;
    let ready = u64::from(transport::queue_counts(&channel, queue).await?.messages);
    let mut removal = Removal::default();
    if ready == 0 {
        return Ok(removal);
    }
    // No prefetch limit: the held messages must not stop the broker from
    // handing over the rest; each delivery is dropped once sorted.
    let mut consumer = transport::answer(
        format!("take the plan's messages from '{queue}'"),
        channel.basic_consume(
            queue.into(),
            "replay-emergency-stop-subscriber".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    let mut sorted = Sorted { plan, seen: 0, held: None };
    let mut last_delivery = Instant::now();
    while sorted.seen < ready {
        match tokio::time::timeout(IDLE, consumer.next()).await {
            Ok(Some(Ok(delivery))) => {
                last_delivery = Instant::now();
                if let Some(tag) = sorted.plans(&delivery, &mut removal) {
                    ack(&channel, tag).await?;
                    removal.removed += 1;
                }
            }
            Ok(Some(Err(source))) => return Err(TransportError::Broker { action: "take messages".into(), source }),
            Ok(None) => return Err(TransportError::ConsumerClosed),
            Err(_) => {
                let left = u64::from(transport::queue_counts(&channel, queue).await?.messages);
                if left == 0 {
                    break;
                }
                if last_delivery.elapsed() >= wait {
                    removal.unreachable = left;
                    break;
                }
            }
        }
    }
    transport::answer(
        format!("stop taking messages from '{queue}'"),
        channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()),
    )
    .await?;
    // What the broker sent before the cancel: sorted too, then the stream ends.
    while let Some(Ok(delivery)) = consumer.next().await {
        if let Some(tag) = sorted.plans(&delivery, &mut removal) {
            ack(&channel, tag).await?;
            removal.removed += 1;
        }
    }
    if let Some(tag) = sorted.held {
        transport::answer(
            "give the other messages back",
            channel.basic_nack(tag, BasicNackOptions { multiple: true, requeue: true }),
        )
        .await?;
    }
    let _ = transport::answer("close a channel", channel.close(200, "taken".into())).await;
    Ok(removal)
}

/// Deliveries sorted so far: how many, and the last one held back.
struct Sorted {
    plan: PlanId,
    seen: u64,
    /// The highest tag of a message that is not the plan's, held unacked.
    held: Option<u64>,
}

impl Sorted {
    /// The delivery's tag if it is the plan's (to remove); otherwise it is
    /// held, to be given back, and counted.
    fn plans(&mut self, delivery: &lapin::message::Delivery, removal: &mut Removal) -> Option<u64> {
        self.seen += 1;
        match envelope::replay_plan(&delivery.properties) {
            ReplayHeader::Plan(found) if found == self.plan => Some(delivery.delivery_tag),
            _ => {
                removal.returned += 1;
                self.held = Some(delivery.delivery_tag);
                None
            }
        }
    }
}

async fn ack(channel: &lapin::Channel, tag: u64) -> Result<(), TransportError> {
    transport::answer("remove a message of the plan", channel.basic_ack(tag, BasicAckOptions { multiple: false })).await
}
