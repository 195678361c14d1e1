//! How a worker hears of a pause and says what it is doing: one task that
//! listens on `replay_pause` and polls the pause every quarter second (a
//! notification sent while disconnected is lost), publishes it to the intake
//! and the claimer through a watch channel, and writes the worker's heartbeat
//! every second, `paused` only once neither loop is taking work. While a
//! pause is wanted but a loop is still finishing its batch, it also wakes
//! when that loop lets go ([`Liveness::changed`](super::Liveness::changed)),
//! so `paused` is written the moment it is true rather than a poll later
//! (only then: the claimer's flag changes with every batch in normal running).

use std::time::{Duration, Instant};

use super::signals::PauseSender;
use super::Context;
use crate::store::heartbeats::{self, WorkerState};
use crate::store::pause;
use sqlx::postgres::PgListener;
use sqlx::PgPool;

/// How often the pause is read without a notification.
const POLL: Duration = Duration::from_millis(250);
/// How often the heartbeat is written when nothing changes.
const BEAT: Duration = Duration::from_secs(1);

pub(super) async fn watch(context: Context, paused: PauseSender) {
    let Context { pool, worker, liveness, shutdown, .. } = &context;
    let host = super::host_name();
    let mut listener = None;
    let mut last_beat: Option<(Instant, WorkerState)> = None;
    while !shutdown.is_triggered() {
        if listener.is_none() {
            listener = listen(pool).await;
        }
        match pause::current(pool).await {
            Ok(now) => {
                let is_paused = now.is_some();
                paused.send_if_modified(|p| std::mem::replace(p, is_paused) != is_paused);
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the pause; keeping the last known state"),
        }
        let state =
            if *paused.borrow() && !liveness.is_consuming() && !liveness.is_claiming() && !liveness.is_relaying() {
                WorkerState::Paused
            } else if !liveness.is_leading() {
                WorkerState::Standby
            } else {
                WorkerState::Running
            };
        let due = last_beat.is_none_or(|(at, last)| last != state || at.elapsed() >= BEAT);
        if due {
            match heartbeats::beat(pool, worker, &host, state).await {
                Ok(()) => {
                    if last_beat.is_some_and(|(_, last)| last != state) {
                        tracing::info!(state = ?state, "worker state changed");
                    }
                    last_beat = Some((Instant::now(), state));
                }
                Err(e) => tracing::warn!(error = %e, "cannot write the heartbeat"),
            }
        }
        // Paused but a loop still finishing its batch: wake when it lets go.
        let settling = *paused.borrow() && state != WorkerState::Paused;
        let woke = match listener.as_mut() {
            Some(l) => tokio::select! {
                () = shutdown.triggered() => break,
                () = tokio::time::sleep(POLL) => true,
                () = liveness.changed(), if settling => true,
                notified = l.recv() => notified.is_ok(),
            },
            None => tokio::select! {
                () = shutdown.triggered() => break,
                () = tokio::time::sleep(POLL) => true,
                () = liveness.changed(), if settling => true,
            },
        };
        if !woke {
            listener = None;
        }
    }
    if let Err(e) = heartbeats::beat(pool, worker, &host, WorkerState::Stopped).await {
        tracing::warn!(error = %e, "cannot record that the worker stopped");
    }
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.ok()?;
    listener.listen(pause::CHANNEL).await.ok()?;
    Some(listener)
}
