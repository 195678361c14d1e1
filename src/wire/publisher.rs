//! Publishing events with publisher confirms.
//!
//! Every publish is `mandatory`, so an event that routes to no queue comes back
//! as a return instead of being silently confirmed and dropped. A publish is
//! only reported done once the broker confirmed every event.
//!
//! A publisher routes by event type through our exchange (the workers'
//! topology), or straight to one named queue through the default exchange
//! (a destination replay to one subscriber).

use futures::future::try_join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::Channel;
use lapin::Confirmation;

use crate::config::Endpoints;
use crate::wire::envelope::Event;
use crate::wire::transport::{self, TransportError};

/// How many publishes may await their confirm at once.
const IN_FLIGHT: usize = 1000;
/// How long a window of publishes may wait for its confirms: a broker that
/// went away mid-window may leave them unresolved (see `transport::answer`).
pub const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A confirm-mode channel bound to one exchange.
pub struct Publisher {
    channel: Channel,
    exchange: String,
    route: Route,
}

/// How a publisher picks each event's routing key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    /// The event's type, on a topic exchange.
    ByType,
    /// This queue's name, on the default exchange, which routes to it alone.
    Queue(String),
}

impl Publisher {
    /// A publisher on a new channel of `connection`, with the topology
    /// declared first (events must not go to an exchange with no queue bound).
    pub async fn open(connection: &lapin::Connection, endpoints: &Endpoints) -> Result<Self, TransportError> {
        let channel = transport::channel(connection).await?;
        transport::declare_stream(&channel, endpoints).await?;
        Self::new(channel, &endpoints.exchange).await
    }

    /// Puts the channel in confirm mode.
    pub async fn new(channel: Channel, exchange: &str) -> Result<Self, TransportError> {
        transport::answer("enable publisher confirms", channel.confirm_select(ConfirmSelectOptions::default())).await?;
        Ok(Self { channel, exchange: exchange.to_string(), route: Route::ByType })
    }

    /// A publisher on a new confirm-mode channel of `connection` that sends
    /// every event to `queue` alone, through the default exchange. It
    /// declares nothing: the queue is its subscriber's; a missing one makes
    /// each `mandatory` publish come back, a refusal.
    pub async fn to_queue(connection: &lapin::Connection, queue: &str) -> Result<Self, TransportError> {
        let channel = transport::channel(connection).await?;
        let publisher = Self::new(channel, "").await?;
        Ok(Self { route: Route::Queue(queue.to_string()), ..publisher })
    }

    fn routing_key<'a>(&'a self, event: &'a Event) -> &'a str {
        match &self.route {
            Route::ByType => &event.event_type,
            Route::Queue(queue) => queue,
        }
    }

    fn target(&self) -> String {
        match &self.route {
            Route::ByType => format!("exchange '{}'", self.exchange),
            Route::Queue(queue) => format!("queue '{queue}' (default exchange)"),
        }
    }

    /// Publishes events in order, keeping up to [`IN_FLIGHT`] confirms
    /// outstanding, and returns once each one was confirmed. `on_confirmed` is
    /// told how many were confirmed after each window. A window the broker
    /// has not confirmed within [`CONFIRM_TIMEOUT`] fails as an outage.
    pub async fn publish_all(
        &self,
        events: &[Event],
        mut on_confirmed: impl FnMut(usize),
    ) -> Result<(), TransportError> {
        let total = events.len();
        let mut confirmed = 0;
        for window in events.chunks(IN_FLIGHT) {
            let answered = tokio::time::timeout(CONFIRM_TIMEOUT, self.publish_window(window))
                .await
                .unwrap_or_else(|_| Err(Failure::outage(format!("no confirm within {} s", CONFIRM_TIMEOUT.as_secs()))));
            if let Err(Failure { reason, outage }) = answered {
                return Err(TransportError::Unconfirmed { unconfirmed: total - confirmed, total, reason, outage });
            }
            confirmed += window.len();
            on_confirmed(confirmed);
        }
        Ok(())
    }

    async fn publish_window(&self, window: &[Event]) -> Result<(), Failure> {
        let mut pending = Vec::with_capacity(window.len());
        for event in window {
            let confirm = self
                .channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    self.routing_key(event).into(),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    event.payload_json.as_bytes(),
                    event.properties(),
                )
                .await
                .map_err(Failure::from)?;
            pending.push(confirm);
        }
        let outcomes = try_join_all(pending).await.map_err(Failure::from)?;
        for (event, outcome) in window.iter().zip(outcomes) {
            match outcome {
                Confirmation::Ack(None) | Confirmation::NotRequested => {}
                Confirmation::Ack(Some(_)) => {
                    return Err(Failure::refusal(format!(
                        "event {} (type {}) routed to no queue on {}",
                        event.event_id,
                        event.event_type,
                        self.target()
                    )))
                }
                Confirmation::Nack(_) => {
                    return Err(Failure::refusal(format!("the broker refused event {}", event.event_id)))
                }
            }
        }
        Ok(())
    }
}

/// Why a window was not confirmed, and whether waiting for the broker cures it.
struct Failure {
    reason: String,
    outage: bool,
}

impl Failure {
    fn outage(reason: String) -> Self {
        Self { reason, outage: true }
    }

    fn refusal(reason: String) -> Self {
        Self { reason, outage: false }
    }
}

impl From<lapin::Error> for Failure {
    fn from(error: lapin::Error) -> Self {
        Self { outage: transport::is_outage(&error), reason: error.to_string() }
    }
}
