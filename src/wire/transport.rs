//! The broker connection and the declared topology. Only this module and the
//! modules that move messages (`publisher`, `worker::intake`,
//! `control::emergency::queue`) touch lapin.
//!
//! Topology: one durable topic exchange; one partition queue bound to it with
//! `#` (a quorum queue with single active consumer and a delivery limit) and
//! its dead-letter queue. With N partitions the topic exchange feeds a
//! consistent-hash exchange (`<exchange>.partitions`, hashing the
//! `x-partition-key` header) that spreads events over N such queues, each
//! bound with weight 1. `worker`, `publish` and `apply` declare it, so events
//! published before any worker ever ran wait in a queue instead of being
//! dropped by an exchange with no bindings.

use lapin::options::{ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::config::{Endpoints, SecretUrl};

/// Failures talking to RabbitMQ, each naming the broker by its redacted URL.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot reach RabbitMQ at {url}: {source}. Check that the broker is running and AMQP_URL is right")]
    Connect { url: String, source: lapin::Error },
    /// The broker answered and said no (bad credentials, an unknown virtual
    /// host): waiting never cures it.
    #[error(
        "RabbitMQ at {url} refused the connection: {source}. Check the user, password and virtual host in AMQP_URL"
    )]
    Refused { url: String, source: lapin::Error },
    #[error("RabbitMQ at {url} accepted the connection but did not answer within {} s (a hung broker?). Check the broker's health", .after.as_secs())]
    Unresponsive { url: String, after: std::time::Duration },
    // The parser's own reason may quote the whole URL, password included.
    #[error("AMQP_URL {url} is not an AMQP URL: use amqp://user:password@host:5672/vhost")]
    BadUrl { url: String },
    #[error("RabbitMQ refused to {action}: {source}")]
    Broker { action: String, source: lapin::Error },
    #[error("RabbitMQ did not answer ({action}) within {} s: it is restarting, hung, or the network is gone. Check the broker's health", .after.as_secs())]
    NoAnswer { action: String, after: std::time::Duration },
    #[error("RabbitMQ closed the consumer (channel or connection lost)")]
    ConsumerClosed,
    #[error("RabbitMQ did not confirm {unconfirmed} of {total} published events (last error: {reason}); nothing after the first unconfirmed event should be assumed delivered. Re-run the same publish: the ledger ignores events it already has")]
    Unconfirmed { unconfirmed: usize, total: usize, reason: String, outage: bool },
    #[error("queue '{queue}' exists with other arguments than the ordered topology wants ({detail}): it is most likely a classic queue from before ordered consumption. Run `replay topology` to compare, then `replay topology migrate` to move it without losing a message")]
    TopologyMismatch { queue: String, detail: String },
    #[error("{consumers} consumer(s) still hold queue '{queue}' (a worker that did not pause?): not purging, since their unacked messages would come back after it. Stop them, then run this again")]
    StillConsumed { queue: String, consumers: u32 },
    #[error("RabbitMQ has no consistent-hash exchange type, which --partitions {partitions} needs ({source}). Enable it on every node: `rabbitmq-plugins enable rabbitmq_consistent_hash_exchange` (docker-compose.prod.yml does), or run with --partitions 1")]
    NoHashExchange { partitions: u16, source: lapin::Error },
}

impl TransportError {
    /// Whether this is the broker being away (down, restarting, hung, the
    /// network gone), which waiting cures, rather than a refusal (bad URL or
    /// credentials, a missing exchange, an unroutable or nacked message),
    /// which it never does.
    pub fn is_outage(&self) -> bool {
        match self {
            Self::Connect { source, .. } | Self::Broker { source, .. } => is_outage(source),
            Self::Unresponsive { .. } | Self::NoAnswer { .. } | Self::ConsumerClosed => true,
            Self::Unconfirmed { outage, .. } => *outage,
            Self::Refused { .. }
            | Self::BadUrl { .. }
            | Self::StillConsumed { .. }
            | Self::TopologyMismatch { .. }
            | Self::NoHashExchange { .. } => false,
        }
    }

    /// What went wrong, without the advice meant for `replay publish`.
    pub fn cause(&self) -> String {
        match self {
            Self::Unconfirmed { reason, .. } => reason.clone(),
            other => other.to_string(),
        }
    }
}

/// A lapin error that a broker coming back would cure: IO, a lost
/// connection or channel, missed heartbeats, or the broker closing
/// connections as it shuts down (`CONNECTION_FORCED`, 320).
pub fn is_outage(error: &lapin::Error) -> bool {
    use lapin::ErrorKind;
    match error.kind() {
        ErrorKind::IOError(_)
        | ErrorKind::InvalidConnectionState(_)
        | ErrorKind::InvalidChannelState(..)
        | ErrorKind::MissingHeartbeatError => true,
        ErrorKind::ProtocolError(amqp) => amqp.get_id() == 320,
        _ => false,
    }
}

/// Opens a connection named after its role, so `rabbitmqctl list_connections`
/// tells workers from publishers.
/// A hung broker (stopped with `kill -STOP`, say) accepts TCP connections in
/// the kernel and never answers: give up on the handshake after this long.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// The AMQP heartbeat asked for unless `AMQP_URL` sets `?heartbeat=`: lapin
/// drops a connection that has been silent for twice this long, so a hung
/// broker is left after 20 s instead of the broker's default 120 s.
pub const DEFAULT_HEARTBEAT_SECONDS: u16 = 10;

///
/// `url` may list several nodes of a cluster (`SecretUrl::nodes`): each
/// connection tries them in turn, starting one further along each time, so
/// connections spread over the nodes and a reconnect after a node went away
/// reaches another. Failing on every node, it answers with the last node's
/// error, naming them all.
pub async fn connect(url: &SecretUrl, name: &str) -> Result<Connection, TransportError> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let nodes = url.nodes();
    if nodes.len() <= 1 {
        return connect_node(url, name).await;
    }
    let start = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut last = None;
    for i in 0..nodes.len() {
        match connect_node(&nodes[(start + i) % nodes.len()], name).await {
            Ok(connection) => return Ok(connection),
            Err(error) => last = Some(error),
        }
    }
    let all = url.redacted();
    Err(match last {
        Some(TransportError::Connect { source, .. }) => TransportError::Connect { url: all, source },
        Some(TransportError::Refused { source, .. }) => TransportError::Refused { url: all, source },
        Some(TransportError::Unresponsive { after, .. }) => TransportError::Unresponsive { url: all, after },
        Some(other) => other,
        None => TransportError::BadUrl { url: all },
    })
}

async fn connect_node(url: &SecretUrl, name: &str) -> Result<Connection, TransportError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let mut uri: lapin::uri::AMQPUri =
        url.expose().parse().map_err(|_: String| TransportError::BadUrl { url: url.redacted() })?;
    uri.query.heartbeat.get_or_insert(DEFAULT_HEARTBEAT_SECONDS);
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect_uri(uri, properties)).await {
        Ok(connected) => connected.map_err(|source| {
            if is_outage(&source) {
                TransportError::Connect { url: url.redacted(), source }
            } else {
                TransportError::Refused { url: url.redacted(), source }
            }
        }),
        Err(_) => Err(TransportError::Unresponsive { url: url.redacted(), after: CONNECT_TIMEOUT }),
    }
}

/// How long any one exchange with the broker may wait for its answer. lapin
/// can leave a step's future unresolved when the broker closes the
/// connection in the middle of it (as it does while it shuts down or boots:
/// lapin issue #470), so nothing awaits the broker without a limit.
pub const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Awaits one broker step for at most [`ANSWER_TIMEOUT`].
pub async fn answer<T>(
    action: impl Into<String>,
    step: impl std::future::Future<Output = Result<T, lapin::Error>>,
) -> Result<T, TransportError> {
    let action = action.into();
    match tokio::time::timeout(ANSWER_TIMEOUT, step).await {
        Ok(answered) => answered.map_err(|source| TransportError::Broker { action, source }),
        Err(_) => Err(TransportError::NoAnswer { action, after: ANSWER_TIMEOUT }),
    }
}

/// Opens a channel on `connection`.
pub async fn channel(connection: &Connection) -> Result<Channel, TransportError> {
    answer("open a channel", connection.create_channel()).await
}

/// Closes a connection politely, but gives up after [`ANSWER_TIMEOUT`]
/// (a connection the broker already dropped may never answer).
pub async fn close(connection: &Connection, reason: &str) {
    let _ = answer("close the connection", connection.close(200, reason.into())).await;
}

/// How many times a message may be handed to a worker and come back
/// unacked (its worker died, or its connection did, with the message in
/// hand) before the queue dead-letters it: a message that kills every worker
/// it reaches must not block its partition forever. Generous, because every
/// failover and broker outage returns the messages in flight once.
pub const DELIVERY_LIMIT: i64 = 20;

/// The queue a partition's dead-lettered messages go to (`x-delivery-limit`
/// exceeded); workers drain it into the `dead_letters` table.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dead-letters")
}

/// The arguments of a partition queue: a quorum queue (replicated, at-least-
/// once dead-lettering, a delivery limit) with single active consumer, so
/// the broker never hands one partition's messages to two workers at once.
/// Queue arguments are fixed at declaration: a queue declared before with
/// others is refused by the broker (`PRECONDITION_FAILED`), and
/// `replay topology migrate` moves it.
pub fn partition_arguments(queue: &str) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    arguments.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(DELIVERY_LIMIT));
    arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
    arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(dead_letter_queue(queue).into()));
    // At-least-once dead-lettering (RabbitMQ 3.10+) needs reject-publish; with
    // no length limit set, nothing is ever rejected for length.
    arguments.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
    arguments.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    arguments
}

fn quorum_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    arguments
}

/// Declares the exchange, the partition queue, its dead-letter queue and
/// the binding. Idempotent. A queue that exists with other arguments (a
/// classic queue from before ordering) is [`TransportError::TopologyMismatch`].
pub async fn declare(channel: &Channel, exchange: &str, queue: &str) -> Result<(), TransportError> {
    let durable_exchange = ExchangeDeclareOptions { durable: true, ..Default::default() };
    answer(
        format!("declare exchange '{exchange}'"),
        channel.exchange_declare(exchange.into(), ExchangeKind::Topic, durable_exchange, FieldTable::default()),
    )
    .await?;
    let durable_queue = QueueDeclareOptions { durable: true, ..Default::default() };
    let dead = dead_letter_queue(queue);
    for (name, arguments) in [(dead.as_str(), quorum_arguments()), (queue, partition_arguments(queue))] {
        answer(format!("declare queue '{name}'"), channel.queue_declare(name.into(), durable_queue, arguments))
            .await
            .map_err(|e| mismatch(e, name))?;
    }
    bind(channel, queue, exchange).await
}

/// The header the consistent-hash exchange routes on: events with the same
/// value go to the same partition, in publish order.
pub const PARTITION_KEY_HEADER: &str = "x-partition-key";

/// Declares the whole stream of `endpoints`: with one partition,
/// [`declare`]; with N, the topic exchange, the consistent-hash exchange
/// bound to it with `#`, and every partition queue (with its dead-letter
/// queue) bound to the hash exchange with weight 1, in index order.
/// Idempotent: a binding that exists is left as it is, so the hash ring
/// is not rebuilt.
///
/// Binding one more queue to the hash exchange moves keys between
/// partitions, so a process must run with the system's count: the caller
/// checks it first (`store::partitioning::check`).
pub async fn declare_stream(channel: &Channel, endpoints: &Endpoints) -> Result<(), TransportError> {
    if endpoints.partitions <= 1 {
        return declare(channel, &endpoints.exchange, &endpoints.queue).await;
    }
    let exchange = endpoints.exchange.as_str();
    let hash = endpoints.hash_exchange();
    let durable_exchange = ExchangeDeclareOptions { durable: true, ..Default::default() };
    answer(
        format!("declare exchange '{exchange}'"),
        channel.exchange_declare(exchange.into(), ExchangeKind::Topic, durable_exchange, FieldTable::default()),
    )
    .await?;
    let mut arguments = FieldTable::default();
    arguments.insert("hash-header".into(), AMQPValue::LongString(PARTITION_KEY_HEADER.into()));
    let kind = ExchangeKind::Custom("x-consistent-hash".into());
    answer(
        format!("declare exchange '{hash}'"),
        channel.exchange_declare(hash.as_str().into(), kind, durable_exchange, arguments),
    )
    .await
    .map_err(|e| match e {
        // 503 COMMAND_INVALID: "invalid exchange type", the plugin is off.
        TransportError::Broker { source, .. } if protocol_code(&source) == Some(503) => {
            TransportError::NoHashExchange { partitions: endpoints.partitions, source }
        }
        other => other,
    })?;
    answer(
        format!("bind exchange '{hash}' to '{exchange}'"),
        channel.exchange_bind(
            hash.as_str().into(),
            exchange.into(),
            "#".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    let durable_queue = QueueDeclareOptions { durable: true, ..Default::default() };
    for partition in endpoints.partition_list() {
        let queue = partition.queue.as_str();
        let dead = dead_letter_queue(queue);
        for (name, arguments) in [(dead.as_str(), quorum_arguments()), (queue, partition_arguments(queue))] {
            answer(format!("declare queue '{name}'"), channel.queue_declare(name.into(), durable_queue, arguments))
                .await
                .map_err(|e| mismatch(e, name))?;
        }
        answer(
            format!("bind queue '{queue}' to '{hash}'"),
            channel.queue_bind(
                queue.into(),
                hash.as_str().into(),
                "1".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
    }
    Ok(())
}

/// Stops routing to the queues of `old` that `new` does not keep, and
/// returns them (with their dead-letter queues): the single queue unbound
/// from the topic exchange, the hash exchange deleted when going back to
/// one partition, the partitions beyond the new count unbound from it.
/// Only for `replay topology repartition`, after `new` is declared; the
/// caller checks the returned queues are empty before it deletes them.
pub async fn retire_stream(channel: &Channel, old: &Endpoints, new: &Endpoints) -> Result<Vec<String>, TransportError> {
    use lapin::options::ExchangeDeleteOptions;
    let hash = old.hash_exchange();
    let kept: Vec<String> = new.partition_list().into_iter().map(|p| p.queue).collect();
    let retired: Vec<String> =
        old.partition_list().into_iter().map(|p| p.queue).filter(|q| !kept.contains(q)).collect();
    if old.partitions <= 1 {
        unbind(channel, &old.queue, &old.exchange).await?;
    } else if new.partitions <= 1 {
        answer(
            format!("delete exchange '{hash}'"),
            channel.exchange_delete(hash.as_str().into(), ExchangeDeleteOptions::default()),
        )
        .await?;
    } else {
        for queue in &retired {
            answer(
                format!("unbind queue '{queue}' from '{hash}'"),
                channel.queue_unbind(queue.as_str().into(), hash.as_str().into(), "1".into(), FieldTable::default()),
            )
            .await?;
        }
    }
    Ok(retired.into_iter().flat_map(|q| [dead_letter_queue(&q), q]).collect())
}

/// Deletes a queue (a retired partition's, found empty).
pub async fn delete_queue(channel: &Channel, queue: &str) -> Result<(), TransportError> {
    answer(
        format!("delete queue '{queue}'"),
        channel.queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default()),
    )
    .await?;
    Ok(())
}

/// Binds `queue` to `exchange` for every routing key (`#`).
pub async fn bind(channel: &Channel, queue: &str, exchange: &str) -> Result<(), TransportError> {
    answer(
        format!("bind queue '{queue}' to '{exchange}'"),
        channel.queue_bind(
            queue.into(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
}

/// Undoes [`bind`].
pub async fn unbind(channel: &Channel, queue: &str, exchange: &str) -> Result<(), TransportError> {
    answer(
        format!("unbind queue '{queue}' from '{exchange}'"),
        channel.queue_unbind(queue.into(), exchange.into(), "#".into(), FieldTable::default()),
    )
    .await
}

/// A declaration the broker refused because the queue exists with other
/// arguments (406 PRECONDITION_FAILED) is named as such.
fn mismatch(error: TransportError, queue: &str) -> TransportError {
    match &error {
        TransportError::Broker { source, .. } if protocol_code(source) == Some(406) => {
            TransportError::TopologyMismatch { queue: queue.to_string(), detail: source.to_string() }
        }
        _ => error,
    }
}

/// The AMQP reply code of a broker refusal, if it is one.
pub fn protocol_code(error: &lapin::Error) -> Option<u16> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

/// Number of messages ready in the queue (not counting unacked ones).
pub async fn queue_depth(channel: &Channel, queue: &str) -> Result<u32, TransportError> {
    Ok(queue_counts(channel, queue).await?.messages)
}

/// Messages ready in every partition queue of the stream, added up.
pub async fn stream_depth(channel: &Channel, endpoints: &Endpoints) -> Result<u32, TransportError> {
    let mut depth = 0u32;
    for partition in endpoints.partition_list() {
        depth = depth.saturating_add(queue_depth(channel, &partition.queue).await?);
    }
    Ok(depth)
}

/// Ready messages and open consumers of a queue.
pub async fn queue_counts(channel: &Channel, queue: &str) -> Result<QueueCounts, TransportError> {
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let declared =
        answer(format!("inspect queue '{queue}'"), channel.queue_declare(queue.into(), passive, FieldTable::default()))
            .await?;
    Ok(QueueCounts { messages: declared.message_count(), consumers: declared.consumer_count() })
}

/// What the broker says a queue holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    /// Messages ready for delivery.
    pub messages: u32,
    pub consumers: u32,
}

/// Acks every delivery on the channel up to and including `tag`.
pub async fn ack_through(channel: &Channel, tag: u64) -> Result<(), TransportError> {
    answer("ack taken messages", channel.basic_ack(tag, lapin::options::BasicAckOptions { multiple: true })).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_url_that_is_not_amqp_is_named_without_its_password() {
        for bad in ["http://user:canary-pw@127.0.0.1:5672/", "amqp://user:canary-pw@127.0.0.1:notaport/%2f"] {
            let error = connect(&SecretUrl::new(bad), "test").await.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(!error.is_empty(), "{bad} is refused");
            assert!(!error.contains("canary-pw"), "{error}");
        }
    }
}
