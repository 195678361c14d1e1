//! The outbox relay: publishes, with confirms, the events `replay publish`
//! and `replay apply` kept in the outbox while the broker was away, then
//! forgets them in the same transaction that locked them. Several workers
//! relay side by side (`SKIP LOCKED`); a crash between the confirm and the
//! commit sends an event twice, which the ledger recognises. A paused worker
//! relays nothing: an emergency stop must find the queue and the outbox still.
//!
//! What it did is told twice: counters (`telemetry::metrics`: events relayed,
//! rounds failed), and this worker's [`RelayReport`] in `/health/detailed`
//! (when it last relayed, when and why it last failed).
//!
//! Invariant: every broker step goes through `wire::transport`'s bounded
//! helpers, and a whole round is bounded by [`ROUND_LIMIT`], so a hung peer
//! never holds the outbox's row locks for longer than that.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::signals::PauseSignal;
use super::Context;
use crate::config::Endpoints;
use crate::store::{failed, outbox, StoreError};
use crate::telemetry::metrics;
use crate::wire::publisher::Publisher;
use crate::wire::transport::{self, TransportError};

const BATCH: i64 = 500;
const IDLE: Duration = Duration::from_secs(1);
/// A relay round that has not finished by then is talking to a hung peer:
/// it is abandoned (its transaction rolls back, the events stay kept).
const ROUND_LIMIT: Duration = Duration::from_secs(60);

/// Why a relay round failed. Every one leaves the events kept: the round's
/// transaction rolls back, and the next round tries again.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("the outbox could not be read or updated: {0}")]
    Store(#[from] StoreError),
    #[error("the kept events could not be published: {0}")]
    Broker(#[from] TransportError),
    #[error("the relay round did not finish within {} s (a hung database or broker); its events stay kept", .0.as_secs())]
    NoAnswer(Duration),
}

/// What this worker's relay last did, for `/health/detailed`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RelayReport {
    /// When it last published events from the outbox.
    pub last_relayed_at: Option<DateTime<Utc>>,
    /// When a round last failed, and why.
    pub last_failed_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Whether the latest round failed (a later success clears it).
    pub failing: bool,
}

pub(super) async fn run(context: Context, paused: PauseSignal) {
    let Context { pool, endpoints, worker, liveness, shutdown } = &context;
    let mut broker: Option<(lapin::Connection, Publisher)> = None;
    while !shutdown.is_triggered() {
        // Say "relaying" before the look at the pause: the heartbeat reports
        // paused only if it saw neither, so no relay round follows it.
        liveness.set_relaying(true);
        if paused.is_paused() {
            liveness.set_relaying(false);
            if !shutdown.sleep(IDLE / 4).await {
                break;
            }
            continue;
        }
        let relayed = tokio::time::timeout(ROUND_LIMIT, relay_once(pool, endpoints, worker, &mut broker))
            .await
            .unwrap_or(Err(RelayError::NoAnswer(ROUND_LIMIT)));
        liveness.set_relaying(false);
        match relayed {
            Ok(0) => {
                liveness.report_relay(|report| report.failing = false);
                if !shutdown.sleep(IDLE).await {
                    break;
                }
            }
            Ok(n) => {
                // Counted after the commit: these are gone from the outbox.
                ::metrics::counter!(metrics::OUTBOX_RELAYED).increment(n as u64);
                liveness.report_relay(|report| {
                    report.last_relayed_at = Some(Utc::now());
                    report.failing = false;
                });
                tracing::info!(events = n, "relayed events from the outbox");
            }
            Err(e) => {
                ::metrics::counter!(metrics::OUTBOX_RELAY_FAILURES).increment(1);
                liveness.report_relay(|report| {
                    report.last_failed_at = Some(Utc::now());
                    report.last_error = Some(e.to_string());
                    report.failing = true;
                });
                tracing::warn!(error = %e, "outbox relay failed; retrying");
                if let Some((connection, publisher)) = broker.take() {
                    transport::close(&connection, "relay failed").await;
                    drop(publisher);
                }
                if !shutdown.sleep(IDLE * 5).await {
                    break;
                }
            }
        }
    }
    if let Some((connection, publisher)) = broker {
        transport::close(&connection, "relay stopped").await;
        drop(publisher);
    }
}

/// One round: locks up to [`BATCH`] kept events, publishes them with
/// confirms, forgets them, commits. Returns how many it relayed.
async fn relay_once(
    pool: &PgPool,
    endpoints: &Endpoints,
    worker: &str,
    broker: &mut Option<(lapin::Connection, Publisher)>,
) -> Result<usize, RelayError> {
    let mut tx = pool.begin().await.map_err(failed("begin the relay's transaction"))?;
    let taken = outbox::take(&mut tx, BATCH).await?;
    if taken.is_empty() {
        return Ok(0);
    }
    let publisher = match broker {
        Some((_, publisher)) => publisher,
        None => {
            let connection = transport::connect(&endpoints.amqp_url, &format!("replay relay {worker}")).await?;
            let publisher = Publisher::open(&connection, endpoints).await;
            match publisher {
                Ok(publisher) => &broker.insert((connection, publisher)).1,
                Err(e) => {
                    transport::close(&connection, "relay could not set up its channel").await;
                    return Err(e.into());
                }
            }
        }
    };
    let (ids, events): (Vec<i64>, Vec<_>) = taken.into_iter().map(|kept| (kept.id, kept.event)).unzip();
    publisher.publish_all(&events, |_| {}).await?;
    outbox::forget(&mut tx, &ids).await?;
    tx.commit().await.map_err(failed("commit the relayed events"))?;
    Ok(ids.len())
}
