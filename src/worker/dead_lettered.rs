//! Messages RabbitMQ dead-lettered from a partition queue (handed out more
//! than `x-delivery-limit` times without an ack: each time the worker died
//! or lost its connection holding them) are drained from the dead-letter
//! queue into the `dead_letters` table with the reason, and acked only after
//! that commit: never dropped.

use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use sqlx::PgPool;

use super::signals::Shutdown;
use super::Context;
use crate::config::Endpoints;
use crate::store::dead_letters::{self, DeadLetter};
use crate::store::{failed, StoreError};
use crate::wire::envelope::Received;
use crate::wire::transport::{self, TransportError};

pub(super) async fn run(context: Context) {
    let Context { pool, endpoints, shutdown, .. } = &context;
    let mut delay = Duration::from_millis(500);
    while !shutdown.is_triggered() {
        match drain(pool, endpoints, shutdown).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "cannot drain the dead-letter queue; retrying");
                if !shutdown.sleep(delay).await {
                    return;
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn drain(pool: &PgPool, endpoints: &Endpoints, shutdown: &Shutdown) -> Result<(), TransportError> {
    let connection = transport::connect(&endpoints.amqp_url, "replay worker dead-letters").await?;
    let channel = transport::channel(&connection).await?;
    transport::declare_stream(&channel, endpoints).await?;
    transport::answer("set prefetch", channel.basic_qos(100, BasicQosOptions::default())).await?;
    // Every partition's dead-letter queue, on one channel, each delivery
    // tagged with the queue it came from. A consumer tag names one consumer
    // of the channel: the broker closes the connection on a second of the
    // same name, so each queue's carries its partition.
    let mut consumers = Vec::new();
    for partition in endpoints.partition_list() {
        let queue = transport::dead_letter_queue(&partition.queue);
        let tag = format!("replay-dead-letters.p{}", partition.index);
        let consumer = transport::answer(
            format!("consume queue '{queue}'"),
            channel.basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        consumers.push(consumer.map(move |delivery| (queue.clone(), delivery)).boxed());
    }
    let mut consumer = futures::stream::select_all(consumers);
    let result = loop {
        let next = tokio::select! {
            () = shutdown.triggered() => break Ok(()),
            next = consumer.next() => next,
        };
        let (queue, delivery) = match next {
            Some((queue, Ok(delivery))) => (queue, delivery),
            Some((_, Err(source))) => {
                break Err(TransportError::Broker { action: "deliver dead letters".into(), source })
            }
            None => break Err(TransportError::ConsumerClosed),
        };
        let letter = letter(&delivery, endpoints, &queue);
        tracing::warn!(routing_key = %letter.routing_key, reason = %letter.reason, "storing a message RabbitMQ dead-lettered");
        if let Err(e) = store(pool, &letter).await {
            // Not acked: the message stays in the dead-letter queue.
            tracing::warn!(error = %e, "cannot store a dead-lettered message; it stays in its queue");
            break Ok(());
        }
        if let Err(e) =
            transport::answer("ack a dead letter", channel.basic_ack(delivery.delivery_tag, BasicAckOptions::default()))
                .await
        {
            break Err(e);
        }
    };
    transport::close(&connection, "dead letters drained").await;
    result
}

async fn store(pool: &PgPool, letter: &DeadLetter) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await.map_err(failed("store dead letters"))?;
    dead_letters::insert(&mut conn, std::slice::from_ref(letter)).await
}

/// The dead letter of a message the broker gave up on, with the broker's reason.
fn letter(delivery: &Delivery, endpoints: &Endpoints, queue: &str) -> DeadLetter {
    let received =
        Received { routing_key: delivery.routing_key.as_str(), properties: &delivery.properties, body: &delivery.data };
    let headers = delivery.properties.headers().as_ref();
    let text = |name: &str| match headers.and_then(|h| h.inner().get(name)) {
        Some(AMQPValue::LongString(s)) => Some(s.to_string()),
        Some(AMQPValue::ShortString(s)) => Some(s.to_string()),
        _ => None,
    };
    let why = text("x-first-death-reason").unwrap_or_else(|| "unknown".into());
    let from = text("x-first-death-queue").unwrap_or_else(|| endpoints.queue.clone());
    let reason = if why == "delivery_limit" {
        format!(
            "dead-lettered by RabbitMQ from '{from}' into '{queue}': handed to workers more than {} times without an ack \
             (it crashed or stalled its worker each time). Inspect it, fix the cause, then publish it again",
            transport::DELIVERY_LIMIT
        )
    } else {
        format!("dead-lettered by RabbitMQ from '{from}' into '{queue}' ({why})")
    };
    // Dead-lettering replaced the routing key (the event type) with the
    // dead-letter queue's; x-death keeps the original.
    let original_key = headers
        .and_then(|h| match h.inner().get("x-death") {
            Some(AMQPValue::FieldArray(deaths)) => deaths.as_slice().first().cloned(),
            _ => None,
        })
        .and_then(|death| match death {
            AMQPValue::FieldTable(death) => match death.inner().get("routing-keys") {
                Some(AMQPValue::FieldArray(keys)) => keys.as_slice().first().and_then(|k| match k {
                    AMQPValue::LongString(s) => Some(s.to_string()),
                    AMQPValue::ShortString(s) => Some(s.to_string()),
                    _ => None,
                }),
                _ => None,
            },
            _ => None,
        })
        .unwrap_or_else(|| delivery.routing_key.to_string());
    let exchange = text("x-first-death-exchange").unwrap_or_else(|| endpoints.exchange.clone());
    DeadLetter {
        exchange: if exchange.is_empty() { endpoints.exchange.clone() } else { exchange },
        routing_key: original_key,
        message_id: delivery.properties.message_id().as_ref().map(|id| id.to_string()),
        headers: received.headers_json(),
        body: delivery.data.clone(),
        reason,
    }
}
