//! The two signals every loop of a worker obeys, as types rather than loose
//! channels (mini-redis's `Shutdown` is the model):
//! - [`Shutdown`]: stop for good. Each loop finishes the batch in hand and
//!   returns; it is never undone. The leader's loops get a child of the
//!   worker's, also triggered when the leader session is lost.
//! - [`PauseSignal`]: the operator's pause, as the pause watcher last read
//!   it. While it holds, loops take no work; it lifts when the pause does.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Stop for good: triggered once, heard by every holder of a clone.
#[derive(Clone, Debug)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A signal triggered when `token` is cancelled (by a SIGTERM handler,
    /// or a test).
    pub fn new(token: CancellationToken) -> Self {
        Self { token }
    }

    /// Triggers the stop.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Returns once the stop is triggered.
    pub async fn triggered(&self) {
        self.token.cancelled().await;
    }

    /// Sleeps for `delay` unless the stop comes first; returns false then.
    pub async fn sleep(&self, delay: Duration) -> bool {
        tokio::select! {
            () = self.token.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }

    /// A signal triggered with this one, and also on its own.
    pub fn child(&self) -> Self {
        Self { token: self.token.child_token() }
    }
}

/// Publishes the pause to the loops (held by the pause watcher).
pub type PauseSender = watch::Sender<bool>;

/// The pause as the loops see it. Each loop holds its own clone.
#[derive(Clone, Debug)]
pub struct PauseSignal {
    paused: watch::Receiver<bool>,
}

impl PauseSignal {
    /// A signal that starts paused: a worker takes no work before the
    /// watcher has read the pause once.
    pub fn channel() -> (PauseSender, Self) {
        let (sender, paused) = watch::channel(true);
        (sender, Self { paused })
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Waits while paused; returns false if the stop came first.
    pub async fn wait_until_lifted(&mut self, shutdown: &Shutdown) -> bool {
        tokio::select! {
            () = shutdown.triggered() => false,
            lifted = self.paused.wait_for(|p| !*p) => lifted.is_ok(),
        }
    }

    /// Returns once a pause holds: true, or false if the watcher is gone
    /// (it drops its end at shutdown: that is a stop, not a pause).
    pub async fn paused(&mut self) -> bool {
        self.paused.wait_for(|p| *p).await.is_ok()
    }
}
