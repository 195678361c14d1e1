//! `replay topology`: the declared broker topology against the one the
//! worker wants, and the move of a queue from before ordered consumption (a
//! classic queue) to the ordered one, losing and reordering nothing.
//!
//! The move, for partition queue `Q` (workers of the old version stopped or
//! paused, so nothing consumes `Q`; producers may go on publishing):
//! 1. declare `Q.migration-live` (ordered arguments) and bind it with `#`,
//!    then unbind `Q`: new events land in `Q.migration-live`, in order;
//! 2. move every message of `Q`, in order and with publisher confirms, into
//!    `Q.migration-old` (acked in `Q` only once confirmed), then delete `Q`;
//! 3. declare `Q` as the ordered queue and bind it, then unbind
//!    `Q.migration-live`;
//! 4. the partition's leader drains `Q.migration-old`, then
//!    `Q.migration-live`, then consumes `Q` ([`drain_queues`]).
//!
//! An event published while two queues were bound sits in both; the ledger
//! applies its first copy, in its place, and knows the second as a duplicate.
//! So every event's first copy comes in publish order.

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

use crate::config::Endpoints;
use crate::store::{topology_migrations, StoreError};
use crate::wire::transport::{self, QueueCounts, TransportError};

/// Where the old queue's messages wait during and after a migration.
pub fn migration_old(queue: &str) -> String {
    format!("{queue}.migration-old")
}

/// Where events published during a migration wait.
pub fn migration_live(queue: &str) -> String {
    format!("{queue}.migration-live")
}

/// The queues a partition's leader drains, in this order, before its own.
pub fn drain_queues(queue: &str) -> [String; 2] {
    [migration_old(queue), migration_live(queue)]
}

/// How a queue stands against the ordered topology.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum QueueState {
    /// Not declared yet: the first worker or publish declares it.
    Missing,
    /// Declared with the wanted arguments.
    AsWanted { messages: u32, consumers: u32 },
    /// Declared with other arguments; the broker's own words on what differs.
    Different { messages: u32, consumers: u32, broker_says: String },
}

/// The partition queue and the leftovers of a migration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    pub queue: String,
    pub state: QueueState,
    pub wanted: serde_json::Value,
    /// Migration queues still holding messages (the leader drains them first).
    pub draining: Vec<(String, u32)>,
}

/// Failures of `replay topology`.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("{consumers} consumer(s) still read queue '{queue}' (workers of the old version?): moving it now could apply events out of order. Stop them or `replay pause --reason ...`, then run this again")]
    StillConsumed { queue: String, consumers: u32 },
    #[error("queue '{queue}' is already the ordered queue: nothing to migrate")]
    NothingToMigrate { queue: String },
    #[error("cannot record the migration in the database: {0}. Check DATABASE_URL and run this again")]
    Record(StoreError),
    #[error("queue '{queue}' does not exist: nothing to migrate (the first worker declares it as the ordered queue)")]
    Missing { queue: String },
}

/// The wanted arguments as operators read them.
pub fn wanted(queue: &str) -> serde_json::Value {
    serde_json::json!({
        "x-queue-type": "quorum",
        "x-single-active-consumer": true,
        "x-delivery-limit": transport::DELIVERY_LIMIT,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": transport::dead_letter_queue(queue),
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    })
}

/// Reads how the partition queue stands. Changes nothing: an existing queue
/// is compared by declaring it again with the wanted arguments, which the
/// broker either accepts as equivalent or refuses, naming the difference.
pub async fn inspect(endpoints: &Endpoints) -> Result<Inspection, TopologyError> {
    let connection = transport::connect(&endpoints.amqp_url, "replay topology").await?;
    let result = inspect_on(&connection, &endpoints.queue).await;
    transport::close(&connection, "topology read").await;
    result
}

async fn inspect_on(connection: &Connection, queue: &str) -> Result<Inspection, TopologyError> {
    let state = match counts(connection, queue).await? {
        None => QueueState::Missing,
        Some(QueueCounts { messages, consumers }) => {
            let channel = transport::channel(connection).await?;
            let durable = QueueDeclareOptions { durable: true, ..Default::default() };
            let declare = channel.queue_declare(queue.into(), durable, transport::partition_arguments(queue));
            match transport::answer(format!("compare queue '{queue}'"), declare).await {
                Ok(_) => QueueState::AsWanted { messages, consumers },
                Err(TransportError::Broker { source, .. }) if transport::protocol_code(&source) == Some(406) => {
                    QueueState::Different { messages, consumers, broker_says: source.to_string() }
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let mut draining = Vec::new();
    for name in drain_queues(queue) {
        if let Some(QueueCounts { messages, .. }) = counts(connection, &name).await? {
            draining.push((name, messages));
        }
    }
    Ok(Inspection { queue: queue.to_string(), state, wanted: wanted(queue), draining })
}

/// Messages and consumers of a queue, or `None` if it does not exist. A
/// passive declare of a missing queue closes its channel: each look gets one.
pub(crate) async fn counts(connection: &Connection, queue: &str) -> Result<Option<QueueCounts>, TransportError> {
    let channel = transport::channel(connection).await?;
    match transport::queue_counts(&channel, queue).await {
        Ok(counts) => Ok(Some(counts)),
        Err(TransportError::Broker { source, .. }) if transport::protocol_code(&source) == Some(404) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What a migration did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Migrated {
    pub queue: String,
    pub moved: u64,
}

/// Moves the old partition queue to the ordered topology (module doc), and
/// records the move so the partition's leader drains the holding queues.
pub async fn migrate(endpoints: &Endpoints, pool: &sqlx::PgPool) -> Result<Migrated, TopologyError> {
    // Recorded first: a move cut short still has its holding queues drained.
    topology_migrations::record(pool, &endpoints.queue).await.map_err(TopologyError::Record)?;
    let connection = transport::connect(&endpoints.amqp_url, "replay topology migrate").await?;
    let result = migrate_on(&connection, endpoints).await;
    transport::close(&connection, "topology migrated").await;
    result
}

async fn migrate_on(connection: &Connection, endpoints: &Endpoints) -> Result<Migrated, TopologyError> {
    let (exchange, queue) = (endpoints.exchange.as_str(), endpoints.queue.as_str());
    let inspection = inspect_on(connection, queue).await?;
    match inspection.state {
        QueueState::Missing => return Err(TopologyError::Missing { queue: queue.into() }),
        QueueState::AsWanted { .. } => return Err(TopologyError::NothingToMigrate { queue: queue.into() }),
        QueueState::Different { consumers, .. } if consumers > 0 => {
            return Err(TopologyError::StillConsumed { queue: queue.into(), consumers })
        }
        QueueState::Different { .. } => {}
    }
    let channel = transport::channel(connection).await?;
    transport::answer("enable publisher confirms", channel.confirm_select(ConfirmSelectOptions::default())).await?;
    let (old, live) = (migration_old(queue), migration_live(queue));
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    // Plain quorum queues: only the partition's leader drains them, with
    // `basic.get`, which single active consumer would refuse.
    let mut holding = FieldTable::default();
    holding.insert("x-queue-type".into(), lapin::types::AMQPValue::LongString("quorum".into()));
    // 1. New events go to the live holding queue from now on.
    for name in [&old, &live] {
        transport::answer(
            format!("declare queue '{name}'"),
            channel.queue_declare(name.as_str().into(), durable, holding.clone()),
        )
        .await?;
    }
    transport::bind(&channel, &live, exchange).await?;
    transport::unbind(&channel, queue, exchange).await?;
    // 2. The old queue's messages, in order, into the old holding queue.
    let moved = move_all(&channel, queue, &old).await?;
    transport::answer(
        format!("delete queue '{queue}'"),
        channel.queue_delete(queue.into(), QueueDeleteOptions { if_empty: true, ..Default::default() }),
    )
    .await?;
    // 3. The partition queue, ordered, takes the traffic back.
    transport::declare(&channel, exchange, queue).await?;
    transport::unbind(&channel, &live, exchange).await?;
    tracing::info!(queue, moved, "queue migrated to the ordered topology");
    Ok(Migrated { queue: queue.to_string(), moved })
}

/// Moves every message of `from` to the end of `to`, one at a time, each
/// acked in `from` only once `to` confirmed it: a failure midway loses
/// nothing, and a re-run continues where this one stopped.
async fn move_all(channel: &Channel, from: &str, to: &str) -> Result<u64, TransportError> {
    let mut moved = 0;
    while let Some(message) = transport::answer(
        format!("take a message from '{from}'"),
        channel.basic_get(from.into(), BasicGetOptions { no_ack: false }),
    )
    .await?
    {
        let delivery = message.delivery;
        // Published anew through the default exchange, the message would
        // lose its routing key: a hand-published event's type and derived
        // id come from it, so both travel as properties.
        let mut properties = delivery.properties.clone();
        let key = delivery.routing_key.as_str();
        if properties.kind().as_ref().is_none_or(|k| k.as_str().is_empty()) {
            properties = properties.with_type(key.into());
        }
        if properties.message_id().is_none() {
            properties =
                properties.with_message_id(crate::wire::envelope::derived_event_id(key, &delivery.data).into());
        }
        let confirm = transport::answer(
            format!("move a message to '{to}'"),
            channel.basic_publish(
                "".into(),
                to.into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &delivery.data,
                properties,
            ),
        )
        .await?;
        let confirmed = transport::answer(format!("confirm a message in '{to}'"), confirm).await?;
        if !confirmed.is_ack() || confirmed.take_message().is_some() {
            return Err(TransportError::Unconfirmed {
                unconfirmed: 1,
                total: 1,
                reason: format!("'{to}' did not take a moved message"),
                outage: false,
            });
        }
        transport::answer("ack a moved message", channel.basic_ack(delivery.delivery_tag, BasicAckOptions::default()))
            .await?;
        moved += 1;
    }
    Ok(moved)
}
