//! The claiming half of a worker: ledger rows that are due, processed without
//! any message. It runs only on the partition's leader, on the leader's
//! session, so a retry, a released hold or a replay's fallback is applied
//! between the intake's batches, never beside them. Woken by `NOTIFY replay_pending` and by a timer, since a
//! notification sent while the listener was disconnected is lost: the table is
//! the truth, the notification only a wake-up.

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;

use super::signals::PauseSignal;
use super::Lead;
use crate::config::SecretUrl;
use crate::store::ledger;

/// Claims and applies due rows while this worker leads the partition, on
/// the leader's session, between the intake's batches.
pub(super) async fn run(lead: &Lead<'_>, mut paused: PauseSignal) {
    let (config, liveness, stop) = (lead.config, lead.liveness, &lead.stop);
    let partition = lead.leadership.partition.index;
    let mut listener = None;
    while !stop.is_triggered() {
        liveness.set_claiming(partition, false);
        if !paused.wait_until_lifted(stop).await {
            break;
        }
        // Say "claiming" before the last look at the pause: the heartbeat
        // reports paused only if it saw neither, so no claim follows it.
        liveness.set_claiming(partition, true);
        if paused.is_paused() {
            continue;
        }
        if listener.is_none() {
            listener = listen(lead.pool, &lead.endpoints.database_url).await;
        }
        match claim_and_apply(lead).await {
            Claimed::Some(count) => tracing::debug!(count, "claimed rows processed"),
            Claimed::None => {
                liveness.set_claiming(partition, false);
                let woke = match listener.as_mut() {
                    Some(l) => tokio::select! {
                        _ = paused.paused() => true,
                        () = stop.triggered() => break,
                        () = tokio::time::sleep(config.poll_interval) => true,
                        notified = l.recv() => notified.is_ok(),
                    },
                    None => stop.sleep(config.poll_interval).await,
                };
                if !woke {
                    listener = None;
                }
            }
            Claimed::Failed => {
                listener = None;
                if !stop.sleep(config.poll_interval.max(Duration::from_millis(500))).await {
                    break;
                }
            }
            Claimed::Lost => break,
        }
    }
    liveness.set_claiming(partition, false);
}

/// What one claim came to.
enum Claimed {
    Some(usize),
    None,
    Failed,
    Lost,
}

async fn claim_and_apply(lead: &Lead<'_>) -> Claimed {
    let config = lead.config;
    let mut session = lead.leadership.session.lock().await;
    let claim = ledger::claim_due(
        &mut session,
        &config.id,
        lead.leadership.partition.ledger_index(),
        config.batch_size as i64,
        config.lease,
    );
    // A database that stopped answering fails the claim instead of holding the claimer.
    let claimed = match tokio::time::timeout(config.batch_timeout, claim).await {
        Ok(Ok(claimed)) => claimed,
        Ok(Err(e)) if e.is_connection_loss() => {
            lead.lose(&e.source);
            return Claimed::Lost;
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot claim due rows; retrying");
            return Claimed::Failed;
        }
        Err(_) => {
            lead.lose(&format!("the claim did not finish within {:?}", config.batch_timeout));
            return Claimed::Lost;
        }
    };
    if claimed.is_empty() {
        return Claimed::None;
    }
    let count = claimed.len();
    match lead.pipeline.process_claimed(&mut session, claimed).await {
        Ok(tally) => {
            tracing::debug!(count, ?tally, "claimed rows processed");
            Claimed::Some(count)
        }
        Err(e) if e.lost_connection() => {
            lead.lose(&e);
            Claimed::Lost
        }
        // The claim stays until its lease expires, then the rows are retried.
        Err(e) => {
            tracing::warn!(error = %e, count, "claimed rows not processed; their lease will expire");
            Claimed::Failed
        }
    }
}

/// Longest opening the notification listener may take.
const LISTEN_WITHIN: Duration = Duration::from_secs(5);

async fn listen(pool: &PgPool, url: &SecretUrl) -> Option<PgListener> {
    // Bounded: the listener's connection comes from the pool, whose idle
    // connections may hang (a frozen network path); the claimer polls then.
    let listening = tokio::time::timeout(LISTEN_WITHIN, async {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen("replay_pending").await.map(|()| listener)
    })
    .await;
    match listening {
        Ok(Ok(listener)) => Some(listener),
        Ok(Err(e)) => {
            tracing::warn!(database = %url, error = %e, "cannot listen for due rows; polling instead");
            None
        }
        Err(_) => {
            tracing::warn!(database = %url, "listening for due rows got no answer; polling instead");
            None
        }
    }
}
