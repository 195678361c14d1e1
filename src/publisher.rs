//! Publishing events with publisher confirms.
//!
//! Every publish is `mandatory`, so an event that routes to no queue comes back
//! as a return instead of being silently confirmed and dropped. A publish is
//! only reported done once the broker confirmed every event.

use futures::future::try_join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::Channel;
use lapin::Confirmation;

use crate::envelope::Event;
use crate::transport::TransportError;

/// How many publishes may await their confirm at once.
const IN_FLIGHT: usize = 1000;

/// A confirm-mode channel bound to one exchange.
pub struct Publisher {
    channel: Channel,
    exchange: String,
}

impl Publisher {
    /// Puts the channel in confirm mode.
    pub async fn new(channel: Channel, exchange: &str) -> Result<Self, TransportError> {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(TransportError::broker("enable publisher confirms"))?;
        Ok(Self { channel, exchange: exchange.to_string() })
    }

    /// Publishes events in order, keeping up to [`IN_FLIGHT`] confirms
    /// outstanding, and returns once each one was confirmed. `on_confirmed` is
    /// told how many were confirmed after each window.
    pub async fn publish_all(
        &self,
        events: &[Event],
        mut on_confirmed: impl FnMut(usize),
    ) -> Result<(), TransportError> {
        let total = events.len();
        let mut confirmed = 0;
        for window in events.chunks(IN_FLIGHT) {
            let mut pending = Vec::with_capacity(window.len());
            for event in window {
                let sent = self
                    .channel
                    .basic_publish(
                        self.exchange.as_str().into(),
                        event.event_type.as_str().into(),
                        BasicPublishOptions { mandatory: true, ..Default::default() },
                        event.payload_json.as_bytes(),
                        event.properties(),
                    )
                    .await;
                match sent {
                    Ok(confirm) => pending.push(confirm),
                    Err(e) => {
                        return Err(unconfirmed(total, confirmed, e.to_string(), crate::transport::is_outage(&e)))
                    }
                }
            }
            let outcomes = try_join_all(pending)
                .await
                .map_err(|e| unconfirmed(total, confirmed, e.to_string(), crate::transport::is_outage(&e)))?;
            for (event, outcome) in window.iter().zip(outcomes) {
                match outcome {
                    Confirmation::Ack(None) | Confirmation::NotRequested => {}
                    Confirmation::Ack(Some(_)) => {
                        return Err(unconfirmed(
                            total,
                            confirmed,
                            format!(
                                "event {} (type {}) routed to no queue on exchange '{}'",
                                event.event_id, event.event_type, self.exchange
                            ),
                            false,
                        ))
                    }
                    Confirmation::Nack(_) => {
                        return Err(unconfirmed(
                            total,
                            confirmed,
                            format!("the broker refused event {}", event.event_id),
                            false,
                        ))
                    }
                }
            }
            confirmed += window.len();
            on_confirmed(confirmed);
        }
        Ok(())
    }
}

fn unconfirmed(total: usize, confirmed: usize, reason: String, outage: bool) -> TransportError {
    TransportError::Unconfirmed { unconfirmed: total - confirmed, total, reason, outage }
}
