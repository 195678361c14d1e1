//! The outbox relay: publishes, with confirms, the events `replay publish`
//! and `replay apply` kept in the outbox while the broker was away, then
//! forgets them in the same transaction that locked them. Several workers
//! relay side by side (`SKIP LOCKED`); a crash between the confirm and the
//! commit sends an event twice, which the ledger recognises. A paused worker
//! relays nothing: an emergency stop must find the queue and the outbox still.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{pause, Liveness};
use crate::config::Endpoints;
use crate::store::outbox;
use crate::wire::publisher::Publisher;
use crate::wire::transport;

const BATCH: i64 = 500;
const IDLE: Duration = Duration::from_secs(1);
/// A relay round that has not finished by then is talking to a hung peer:
/// it is abandoned (its transaction rolls back, the events stay kept).
const ROUND_LIMIT: Duration = Duration::from_secs(60);

pub(super) async fn run(
    pool: PgPool,
    endpoints: Endpoints,
    worker: String,
    liveness: Liveness,
    paused: tokio::sync::watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    let mut broker: Option<(lapin::Connection, Publisher)> = None;
    while !shutdown.is_cancelled() {
        // Say "relaying" before the look at the pause: the heartbeat reports
        // paused only if it saw neither, so no relay round follows it.
        liveness.set_relaying(true);
        if *paused.borrow() {
            liveness.set_relaying(false);
            if !pause(IDLE / 4, &shutdown).await {
                break;
            }
            continue;
        }
        let relayed = tokio::time::timeout(ROUND_LIMIT, relay_once(&pool, &endpoints, &worker, &mut broker))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} s", ROUND_LIMIT.as_secs()).into()));
        liveness.set_relaying(false);
        match relayed {
            Ok(0) => {
                if !pause(IDLE, &shutdown).await {
                    break;
                }
            }
            Ok(n) => tracing::info!(events = n, "relayed events from the outbox"),
            Err(e) => {
                tracing::warn!(error = %e, "outbox relay failed; retrying");
                broker = None;
                if !pause(IDLE * 5, &shutdown).await {
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

async fn relay_once(
    pool: &PgPool,
    endpoints: &Endpoints,
    worker: &str,
    broker: &mut Option<(lapin::Connection, Publisher)>,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let mut tx = pool.begin().await?;
    let taken = outbox::take(&mut tx, BATCH).await?;
    if taken.is_empty() {
        return Ok(0);
    }
    if broker.is_none() {
        let connection = transport::connect(&endpoints.amqp_url, &format!("replay relay {worker}")).await?;
        let channel = connection.create_channel().await?;
        transport::declare(&channel, &endpoints.exchange, &endpoints.queue).await?;
        let publisher = Publisher::new(channel, &endpoints.exchange).await?;
        *broker = Some((connection, publisher));
    }
    let Some((_, publisher)) = broker.as_ref() else { return Ok(0) };
    let (ids, events): (Vec<i64>, Vec<_>) = taken.into_iter().unzip();
    publisher.publish_all(&events, |_| {}).await?;
    outbox::forget(&mut tx, &ids).await?;
    tx.commit().await?;
    Ok(ids.len())
}
