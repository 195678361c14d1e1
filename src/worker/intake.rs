//! The consuming half of a worker: queue → batches → pipeline → ack.
//!
//! Architecture invariants: a message is acked only after the transaction
//! that recorded it committed. Only the partition's leader consumes, and it
//! never leaves messages unacked behind a cancelled consumer: a pause
//! cancels, applies and acks what the broker already sent, then closes; a
//! stop (shutdown, a lost session) closes at once without a cancel, as a
//! crash would, so the broker returns the unacked messages in order before
//! another consumer is activated. A broker outage is waited out: the loop
//! reconnects with backoff, and messages it had not acked are redelivered
//! (the ledger recognises them).

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicQosOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};

use super::signals::PauseSignal;
use super::Lead;
use crate::config::Endpoints;
use crate::store::dead_letters::DeadLetter;
use crate::wire::envelope::{Event, Received};
use crate::wire::transport::{self, TransportError};

/// Longest wait between two reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(10);

/// Consumes the partition queue while this worker leads it.
pub(super) async fn run(lead: &Lead<'_>, mut paused: PauseSignal) {
    let mut delay = Duration::from_millis(200);
    while !lead.stop.is_triggered() {
        if !paused.wait_until_lifted(&lead.stop).await {
            break;
        }
        let consumed = consume(lead, &mut paused).await;
        lead.liveness.set_consuming(lead.leadership.partition.index, false);
        match consumed {
            Ok(Ended::Stopped) => return,
            Ok(Ended::Paused) => {
                tracing::info!("paused: what the consumer held is applied and acked, consumer closed");
                delay = Duration::from_millis(200);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "consuming stopped; reconnecting");
                if !lead.stop.sleep(delay).await {
                    break;
                }
                delay = (delay * 2).min(MAX_RECONNECT_DELAY);
            }
        }
    }
}

/// Why a connection's life ended without a broker fault.
enum Ended {
    /// Shutdown, or the leader session lost.
    Stopped,
    Paused,
}

/// One connection's life: consume until shutdown, a pause or a lost session
/// (Ok) or a broker fault (Err).
async fn consume(lead: &Lead<'_>, paused: &mut PauseSignal) -> Result<Ended, TransportError> {
    let (endpoints, config) = (lead.endpoints, lead.config);
    let queue = lead.leadership.partition.queue.as_str();
    let connection = transport::connect(&endpoints.amqp_url, &format!("replay worker {} {queue}", config.id)).await?;
    let channel = transport::channel(&connection).await?;
    transport::declare_stream(&channel, endpoints).await?;
    transport::answer("set prefetch", channel.basic_qos(config.prefetch, BasicQosOptions::default())).await?;
    if !drain_migration(lead, &connection).await? {
        transport::close(&connection, "worker stopping").await;
        return Ok(Ended::Stopped);
    }
    let mut consumer = transport::answer(
        format!("consume queue '{queue}'"),
        channel.basic_consume(
            queue.into(),
            format!("replay-{}", config.id).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    tracing::info!(queue, prefetch = config.prefetch, "consuming");
    lead.liveness.set_consuming(lead.leadership.partition.index, true);

    let result = consume_batches(lead, paused, &channel, &mut consumer).await;
    let result = match result {
        // A pause leaves nothing unacked behind a cancelled consumer. A stop
        // (shutdown, a lost session) closes without a cancel, as a crash
        // would: the broker then returns the unacked messages in order
        // before it activates the next consumer (a cancelled one's were
        // seen applied out of order by the standby).
        Ok(Ended::Paused) if !lead.is_lost() => hand_back(lead, &channel, &mut consumer).await.map(|()| Ended::Paused),
        other => other,
    };
    // Closing without a cancel returns what is still unacked at once, in
    // order, before the broker activates another consumer.
    transport::close(&connection, "worker stopping").await;
    result
}

async fn consume_batches(
    lead: &Lead<'_>,
    paused: &mut PauseSignal,
    channel: &Channel,
    consumer: &mut Consumer,
) -> Result<Ended, TransportError> {
    loop {
        // Between batches only: a batch in flight always finishes first.
        let first = tokio::select! {
            () = lead.stop.triggered() => return Ok(Ended::Stopped),
            paused_now = paused.paused() => return Ok(if paused_now { Ended::Paused } else { Ended::Stopped }),
            next = consumer.next() => next,
        };
        let mut batch = vec![next_delivery(first)?];
        // Take what has already arrived, without waiting: batches grow with load.
        while batch.len() < lead.config.batch_size {
            match consumer.next().now_or_never() {
                Some(next) => batch.push(next_delivery(next)?),
                None => break,
            }
        }
        if !commit_and_ack(lead, channel, &batch).await? {
            return Ok(Ended::Stopped);
        }
        if lead.stop.is_triggered() {
            // What an operator reads to know a stop lost nothing in flight.
            tracing::info!(events = batch.len(), "stopping: the batch in hand is committed and acked");
            return Ok(Ended::Stopped);
        }
    }
}

/// Applies what a topology migration left (`topology`): the old queue's
/// messages, then the events published during the move, before the
/// partition queue's own, and deletes each holding queue once empty. False
/// if the session was lost or shutdown came first.
async fn drain_migration(lead: &Lead<'_>, connection: &lapin::Connection) -> Result<bool, TransportError> {
    let queue = &lead.leadership.partition.queue;
    // Looking for a queue that does not exist closes the channel with an
    // error lapin logs loudly: look only after a recorded migration.
    match crate::store::topology_migrations::recorded(lead.pool, queue).await {
        Ok(true) => {}
        Ok(false) => return Ok(true),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read whether a topology migration is to be drained; looking anyway");
        }
    }
    for queue in crate::wire::topology::drain_queues(queue) {
        if crate::wire::topology::counts(connection, &queue).await?.is_none() {
            continue;
        }
        let channel = transport::channel(connection).await?;
        let mut drained = 0;
        loop {
            let mut batch = Vec::new();
            while batch.len() < lead.config.batch_size {
                let get = channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false });
                match transport::answer(format!("take messages from '{queue}'"), get).await? {
                    Some(message) => batch.push(message.delivery),
                    None => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            if !commit_and_ack(lead, &channel, &batch).await? {
                return Ok(false);
            }
            drained += batch.len();
        }
        // Unbound, and only this leader takes from it: empty now means empty
        // for good. (Quorum queues refuse a delete `if_empty`.)
        transport::answer(
            format!("delete the drained queue '{queue}'"),
            channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()),
        )
        .await?;
        tracing::info!(queue, drained, "applied and removed a topology migration's queue");
    }
    if let Err(e) = crate::store::topology_migrations::forget(lead.pool, queue).await {
        tracing::warn!(error = %e, "cannot record that the migration is drained; the next leader looks again");
    }
    Ok(true)
}

/// Cancels the consumer, then applies and acks what the broker had already
/// sent it (the stream yields it, then ends).
async fn hand_back(lead: &Lead<'_>, channel: &Channel, consumer: &mut Consumer) -> Result<(), TransportError> {
    transport::answer("cancel the consumer", channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()))
        .await?;
    let mut batch = Vec::new();
    loop {
        let next = transport::answer("hand back deliveries", async { Ok(consumer.next().await) }).await?;
        match next {
            Some(Ok(delivery)) => batch.push(delivery),
            Some(Err(source)) => return Err(TransportError::Broker { action: "deliver messages".into(), source }),
            None => break,
        }
        if batch.len() >= lead.config.batch_size && !commit_and_ack(lead, channel, &std::mem::take(&mut batch)).await? {
            return Ok(());
        }
    }
    if !batch.is_empty() {
        let count = batch.len();
        if commit_and_ack(lead, channel, &batch).await? {
            tracing::info!(count, "applied what the cancelled consumer still held");
        }
    }
    Ok(())
}

/// Applies one batch and acks it once committed. False if the leader
/// session was lost or shutdown came first: nothing was committed, and the
/// messages go back to the queue when the connection closes.
async fn commit_and_ack(lead: &Lead<'_>, channel: &Channel, batch: &[Delivery]) -> Result<bool, TransportError> {
    let Some(last_tag) = batch.last().map(|d| d.delivery_tag) else {
        return Ok(true);
    };
    let ReadBatch { events, dead } = read_batch(batch, lead.endpoints, lead.config.max_message_bytes);
    if !commit_with_retry(lead, events, &dead).await {
        return Ok(false);
    }
    transport::answer("ack a committed batch", channel.basic_ack(last_tag, BasicAckOptions { multiple: true })).await?;
    metrics::counter!(crate::telemetry::metrics::EVENTS_CONSUMED).increment(batch.len() as u64);
    Ok(true)
}

fn next_delivery(next: Option<lapin::Result<Delivery>>) -> Result<Delivery, TransportError> {
    match next {
        Some(Ok(delivery)) => Ok(delivery),
        Some(Err(source)) => Err(TransportError::Broker { action: "deliver messages".into(), source }),
        None => Err(TransportError::ConsumerClosed),
    }
}

/// Deliveries read: the events, and the messages that are not events.
pub(crate) struct ReadBatch {
    pub events: Vec<Event>,
    pub dead: Vec<DeadLetter>,
}

/// Splits deliveries into events and messages that are not events.
pub(crate) fn read_batch<'d>(
    batch: impl IntoIterator<Item = &'d Delivery>,
    endpoints: &Endpoints,
    max_bytes: usize,
) -> ReadBatch {
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
    ReadBatch { events, dead }
}

/// Commits the batch on the leader's session, retrying what the session
/// survives. Returns false (nothing committed) if the session is lost, which
/// ends this worker's leadership, or if shutdown came first.
async fn commit_with_retry(lead: &Lead<'_>, events: Vec<Event>, dead: &[DeadLetter]) -> bool {
    let mut delay = Duration::from_millis(100);
    loop {
        let committed = {
            let mut session = lead.leadership.session.lock().await;
            lead.pipeline.process_messages(&mut session, &events, dead).await
        };
        match committed {
            Ok(tally) => {
                tracing::debug!(?tally, "batch committed");
                return true;
            }
            Err(e) if e.lost_connection() => {
                lead.lose(&e);
                return false;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "batch not committed; retrying");
                if !lead.stop.sleep(delay).await {
                    return false;
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
