//! The claiming half of a worker: ledger rows that are due, processed without
//! any message. Woken by `NOTIFY replay_pending` and by a timer, since a
//! notification sent while the listener was disconnected is lost: the table is
//! the truth, the notification only a wake-up.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::pipeline::Pipeline;
use super::{pause, pausing, Liveness, WorkerConfig};
use crate::config::SecretUrl;
use crate::ledger;

pub(super) async fn run(
    pipeline: Arc<Pipeline>,
    pool: PgPool,
    database_url: SecretUrl,
    config: WorkerConfig,
    liveness: Liveness,
    mut paused: tokio::sync::watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    let mut listener = None;
    while !shutdown.is_cancelled() {
        liveness.set_claiming(false);
        if !pausing::wait_while_paused(&mut paused, &shutdown).await {
            break;
        }
        // Say "claiming" before the last look at the pause: the heartbeat
        // reports paused only if it saw neither, so no claim follows it.
        liveness.set_claiming(true);
        if *paused.borrow() {
            continue;
        }
        if listener.is_none() {
            listener = listen(&pool, &database_url).await;
        }
        let claim = ledger::claim_due(&pool, &config.id, config.batch_size as i64, config.lease);
        // A database that stopped answering fails the claim instead of holding the claimer.
        let claimed = match tokio::time::timeout(config.batch_timeout, claim).await {
            Ok(claimed) => claimed.map_err(|e| e.to_string()),
            Err(_) => Err(format!("the claim did not finish within {:?}", config.batch_timeout)),
        };
        match claimed {
            Ok(claimed) if !claimed.is_empty() => {
                let count = claimed.len();
                match pipeline.process_claimed(claimed).await {
                    Ok(tally) => tracing::debug!(count, ?tally, "claimed rows processed"),
                    // The claim stays until its lease expires, then the rows are retried.
                    Err(e) => {
                        tracing::warn!(error = %e, count, "claimed rows not processed; their lease will expire");
                        if !pause(config.poll_interval, &shutdown).await {
                            break;
                        }
                    }
                }
            }
            Ok(_) => {
                liveness.set_claiming(false);
                let woke = match listener.as_mut() {
                    Some(l) => tokio::select! {
                        _ = paused.wait_for(|p| *p) => true,
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(config.poll_interval) => true,
                        notified = l.recv() => notified.is_ok(),
                    },
                    None => pause(config.poll_interval, &shutdown).await,
                };
                if !woke {
                    listener = None;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim due rows; retrying");
                listener = None;
                if !pause(config.poll_interval.max(Duration::from_millis(500)), &shutdown).await {
                    break;
                }
            }
        }
    }
    liveness.set_claiming(false);
}

async fn listen(pool: &PgPool, url: &SecretUrl) -> Option<PgListener> {
    let mut listener = match PgListener::connect_with(pool).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(database = %url, error = %e, "cannot listen for due rows; polling instead");
            return None;
        }
    };
    match listener.listen("replay_pending").await {
        Ok(()) => Some(listener),
        Err(e) => {
            tracing::warn!(database = %url, error = %e, "cannot listen for due rows; polling instead");
            None
        }
    }
}
