//! The consuming half of a worker: queue → batches → pipeline → ack.
//!
//! Architecture invariant: a message is acked only after the transaction
//! that recorded it committed. A broker outage is waited out: the loop
//! reconnects with backoff, and messages it had not acked are redelivered
//! (the ledger recognises them).

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use tokio_util::sync::CancellationToken;

use super::pipeline::Pipeline;
use super::{pause, pausing, Liveness, WorkerConfig};
use crate::config::Endpoints;
use crate::dead_letters::DeadLetter;
use crate::envelope::{Event, Received};
use crate::transport::{self, TransportError};

/// Why the intake stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// Longest wait between two reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(10);

pub(super) async fn run(
    pipeline: Arc<Pipeline>,
    endpoints: &Endpoints,
    config: &WorkerConfig,
    liveness: &Liveness,
    mut paused: tokio::sync::watch::Receiver<bool>,
    shutdown: CancellationToken,
) -> Result<(), IntakeError> {
    let mut delay = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        if !pausing::wait_while_paused(&mut paused, &shutdown).await {
            break;
        }
        let consumed = consume(&pipeline, endpoints, config, liveness, &mut paused, &shutdown).await;
        liveness.set_consuming(false);
        match consumed {
            Ok(Ended::Shutdown) => return Ok(()),
            Ok(Ended::Paused) => {
                tracing::info!("paused: consumer closed, unacked messages returned to the queue");
                delay = Duration::from_millis(200);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "consuming stopped; reconnecting");
                if !pause(delay, &shutdown).await {
                    break;
                }
                delay = (delay * 2).min(MAX_RECONNECT_DELAY);
            }
        }
    }
    Ok(())
}

/// Why a connection's life ended without a fault.
enum Ended {
    Shutdown,
    Paused,
}

/// One connection's life: consume until shutdown or a pause (Ok) or a broker fault (Err).
async fn consume(
    pipeline: &Pipeline,
    endpoints: &Endpoints,
    config: &WorkerConfig,
    liveness: &Liveness,
    paused: &mut tokio::sync::watch::Receiver<bool>,
    shutdown: &CancellationToken,
) -> Result<Ended, TransportError> {
    let connection = transport::connect(&endpoints.amqp_url, &format!("replay worker {}", config.id)).await?;
    let channel = transport::channel(&connection).await?;
    transport::declare(&channel, &endpoints.exchange, &endpoints.queue).await?;
    transport::answer("set prefetch", channel.basic_qos(config.prefetch, BasicQosOptions::default())).await?;
    let mut consumer = transport::answer(
        format!("consume queue '{}'", endpoints.queue),
        channel.basic_consume(
            endpoints.queue.as_str().into(),
            format!("replay-{}", config.id).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    tracing::info!(queue = %endpoints.queue, prefetch = config.prefetch, "consuming");
    liveness.set_consuming(true);

    let result = consume_batches(pipeline, endpoints, config, paused, shutdown, &channel, &mut consumer).await;
    close(&connection, &channel, &consumer).await;
    result
}

async fn consume_batches(
    pipeline: &Pipeline,
    endpoints: &Endpoints,
    config: &WorkerConfig,
    paused: &mut tokio::sync::watch::Receiver<bool>,
    shutdown: &CancellationToken,
    channel: &Channel,
    consumer: &mut Consumer,
) -> Result<Ended, TransportError> {
    loop {
        // Between batches only: a batch in flight always finishes first.
        let first = tokio::select! {
            () = shutdown.cancelled() => return Ok(Ended::Shutdown),
            _ = paused.wait_for(|p| *p) => return Ok(Ended::Paused),
            next = consumer.next() => next,
        };
        let mut batch = vec![next_delivery(first)?];
        // Take what has already arrived, without waiting: batches grow with load.
        while batch.len() < config.batch_size {
            match consumer.next().now_or_never() {
                Some(next) => batch.push(next_delivery(next)?),
                None => break,
            }
        }
        let Some(last_tag) = batch.last().map(|d| d.delivery_tag) else {
            continue;
        };
        let (events, dead) = read_batch(&batch, endpoints, config.max_message_bytes);
        if !commit_with_retry(pipeline, events, &dead, shutdown).await {
            // Shut down before the batch could commit: closing the channel
            // returns its messages to the queue.
            return Ok(Ended::Shutdown);
        }
        transport::answer("ack a committed batch", channel.basic_ack(last_tag, BasicAckOptions { multiple: true }))
            .await?;
        metrics::counter!(crate::metrics::EVENTS_CONSUMED).increment(batch.len() as u64);
    }
}

fn next_delivery(next: Option<lapin::Result<Delivery>>) -> Result<Delivery, TransportError> {
    match next {
        Some(Ok(delivery)) => Ok(delivery),
        Some(Err(source)) => Err(TransportError::Broker { action: "deliver messages".into(), source }),
        None => Err(TransportError::ConsumerClosed),
    }
}

/// Splits deliveries into events and messages that are not events.
pub(crate) fn read_batch<'d>(
    batch: impl IntoIterator<Item = &'d Delivery>,
    endpoints: &Endpoints,
    max_bytes: usize,
) -> (Vec<Event>, Vec<DeadLetter>) {
    let mut events = Vec::new();
    let mut dead = Vec::new();
    for delivery in batch {
        let received = Received {
            routing_key: delivery.routing_key.as_str(),
            properties: &delivery.properties,
            body: &delivery.data,
        };
        match received.parse(max_bytes) {
            Ok(event) => events.push(event),
            Err(rejection) => {
                tracing::warn!(routing_key = %delivery.routing_key, reason = %rejection, "dead-lettering a message that is not an event");
                dead.push(DeadLetter {
                    exchange: if delivery.exchange.as_str().is_empty() {
                        endpoints.exchange.clone()
                    } else {
                        delivery.exchange.to_string()
                    },
                    routing_key: delivery.routing_key.to_string(),
                    message_id: delivery.properties.message_id().as_ref().map(|id| id.to_string()),
                    headers: received.headers_json(),
                    body: delivery.data.clone(),
                    reason: rejection.0,
                });
            }
        }
    }
    (events, dead)
}

/// Commits the batch, retrying while the database is unavailable. Returns
/// false if shutdown came first (nothing committed).
async fn commit_with_retry(
    pipeline: &Pipeline,
    events: Vec<Event>,
    dead: &[DeadLetter],
    shutdown: &CancellationToken,
) -> bool {
    let mut delay = Duration::from_millis(100);
    loop {
        match pipeline.process_messages(&events, dead).await {
            Ok(tally) => {
                tracing::debug!(?tally, "batch committed");
                return true;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "batch not committed; retrying");
                if !pause(delay, shutdown).await {
                    return false;
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Stops deliveries and closes the connection, so unacked messages return to the
/// queue now rather than when the broker notices a dead socket.
async fn close(connection: &Connection, channel: &Channel, consumer: &Consumer) {
    let _ = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await;
    // Closing the connection closes its channel; closing both makes lapin
    // report the channel's second close as a connection error.
    transport::close(connection, "worker stopping").await;
}
