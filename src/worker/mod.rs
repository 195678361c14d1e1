//! `replay worker`: consumes events from RabbitMQ and claims due ledger rows,
//! applying each event exactly once in effect.
//!
//! One worker at a time leads a partition (`leadership`); the others stand
//! by. The leader's two loops share one [`pipeline::Pipeline`] and its
//! database session, one batch after another:
//! - `intake` consumes the queue with manual acks, in batches, and acks a
//!   batch only after its transaction committed;
//! - `claimer` claims rows that are due (reset by an operator or a replay,
//!   retries, expired leases) and processes them without any message.
//!
//! Shutdown is a [`signals::Shutdown`], a pause a [`signals::PauseSignal`]
//! (the relay, the dead-letter drain and the pause watcher get the stop with
//! what they share in a [`Context`]; the leader's loops in their [`Lead`]):
//! on shutdown both loops stop taking work, finish the batch in flight and
//! return; unacked messages go back to the queue when the
//! channel closes. A pause (`pausing`) does the same without returning: the
//! intake closes its channel and the claimer stops claiming until it lifts.

mod claimer;
mod dead_lettered;
pub mod health;
mod intake;
pub mod leadership;
mod pausing;
pub mod pipeline;
mod relay;
mod signals;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use leadership::{Leadership, Led};

use chrono::Utc;
use rand::Rng;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::{Endpoints, Partition};
use crate::handlers::{HandlerError, Registry};
use crate::store::ledger::Settlement;
use pipeline::Pipeline;
use signals::{PauseSignal, Shutdown};

pub(crate) use intake::{read_batch, ReadBatch};
pub use relay::RelayReport;

/// How failed attempts are retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts before a row is left in `error`.
    pub max_attempts: u32,
    /// Delay before the first retry; doubled each time, with jitter.
    pub backoff: Duration,
    /// Longest delay between two attempts.
    pub max_backoff: Duration,
    /// How long an event whose dependency is not visible yet is held, on
    /// its first attempt, before it is tried again without counting a
    /// failure: long enough for a concurrent batch to commit.
    pub hold: Duration,
}

impl RetryPolicy {
    /// Decides what a failed attempt leads to. `retry_count` is the number of
    /// failed attempts before this one; `first_sight` is true when the event
    /// entered the ledger in this very attempt.
    pub fn after_failure(&self, error: &HandlerError, retry_count: i32, first_sight: bool) -> Settlement {
        let failures = u32::try_from(retry_count).unwrap_or(0) + 1;
        if error.is_permanent() {
            return Settlement::Failed { error: error.to_string(), waiting: false };
        }
        // Another batch (this worker's or another's) may be committing what
        // this event needs: hold it once before counting failures.
        if first_sight && matches!(error, HandlerError::NotReady(_)) {
            let hold = chrono::Duration::from_std(self.hold).unwrap_or(chrono::Duration::MAX);
            return Settlement::Held { reason: format!("held: {error}"), until: Utc::now() + hold };
        }
        if failures >= self.max_attempts {
            let waiting = matches!(error, HandlerError::NotReady(_));
            return Settlement::Failed { error: format!("{error} (gave up after {failures} attempts)"), waiting };
        }
        let exponential = self.backoff.saturating_mul(1u32 << (failures - 1).min(20));
        let capped = exponential.min(self.max_backoff);
        // Jitter spreads retries of a burst of failures over time.
        let jittered = capped.mul_f64(rand::rng().random_range(0.5..1.5));
        let delay = chrono::Duration::from_std(jittered).unwrap_or(chrono::Duration::MAX);
        let waiting = matches!(error, HandlerError::NotReady(_));
        Settlement::Retry { error: error.to_string(), retry_at: Utc::now() + delay, waiting }
    }
}

/// Everything a worker is told at start.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub id: String,
    pub retry: RetryPolicy,
    /// Unacked messages the broker may hand this worker at once.
    pub prefetch: u16,
    /// Most events in one transaction.
    pub batch_size: usize,
    /// How long a claimed row stays this worker's before others may take it.
    pub lease: Duration,
    /// How often to look for due rows when no notification arrives.
    pub poll_interval: Duration,
    /// Largest message body accepted as an event.
    pub max_message_bytes: usize,
    /// Longest a batch may take against the database before it is abandoned and retried.
    pub batch_timeout: Duration,
}

impl WorkerConfig {
    pub fn new(id: String) -> Self {
        Self {
            id,
            retry: RetryPolicy {
                max_attempts: 5,
                backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(300),
                hold: Duration::from_millis(250),
            },
            prefetch: 1000,
            batch_size: 500,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            max_message_bytes: crate::wire::envelope::DEFAULT_MAX_MESSAGE_BYTES,
            batch_timeout: Duration::from_secs(30),
        }
    }
}

/// A name for this worker that tells its host and process apart.
pub fn default_worker_id() -> String {
    format!("{}-{}", host_name(), std::process::id())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_string())
}

/// Runs a worker until `shutdown` is cancelled. It returns nothing: every
/// fault it meets (broker or database away, a lost session) is waited out
/// and logged, never handed up.
///
/// For each partition (one, or `--partitions N`) the worker stands by until
/// it leads it (`leadership`, which also spreads the partitions over the
/// workers), then runs the intake and the claimer on the leader's session
/// until shutdown or until that session is lost, and stands by again.
pub async fn run(
    config: WorkerConfig,
    endpoints: Endpoints,
    pool: PgPool,
    registry: Registry,
    liveness: Liveness,
    shutdown: CancellationToken,
) {
    tracing::info!(
        worker = %config.id,
        database = %endpoints.database_url,
        broker = %endpoints.amqp_url,
        exchange = %endpoints.exchange,
        queue = %endpoints.queue,
        partitions = endpoints.partitions,
        "worker starting"
    );
    let shutdown = Shutdown::new(shutdown);
    let context = Context {
        pool: pool.clone(),
        endpoints: endpoints.clone(),
        worker: config.id.clone(),
        liveness: liveness.clone(),
        shutdown: shutdown.clone(),
    };
    // Paused until the watcher has read the pause once: a worker started
    // during a pause never takes work.
    let (paused_tx, paused) = PauseSignal::channel();
    let watcher = tokio::spawn(pausing::watch(context.clone(), paused_tx));
    let relay = tokio::spawn(relay::run(context.clone(), paused.clone()));
    let dead_lettered = tokio::spawn(dead_lettered::run(context.clone()));
    let led = Led::default();
    let partitions = endpoints.partition_list();
    for partition in &partitions {
        // Served from the start, so a dashboard sees 0 rather than nothing.
        metrics::counter!(crate::telemetry::metrics::UNKEYED_EVENTS, "partition" => partition.index.to_string())
            .increment(0);
    }
    let stands = partitions.iter().map(|partition| {
        let pipeline = Pipeline::new(
            registry.clone(),
            config.id.clone(),
            config.retry,
            config.batch_timeout,
            config.batch_size as i64,
        )
        .for_partition(partition.ledger_index(), endpoints.partitions);
        let stand =
            Stand { partition, led: &led, pool: &pool, endpoints: &endpoints, config: &config, liveness: &liveness };
        stand.run(pipeline, paused.clone(), shutdown.clone())
    });
    futures::future::join_all(stands).await;
    shutdown.trigger();
    let _ = watcher.await;
    let _ = relay.await;
    let _ = dead_lettered.await;
    tracing::info!(worker = %config.id, "worker stopped");
}

/// One partition as this worker sees it: stand by until it leads it, lead
/// it until shutdown or until the leader session is lost, stand by again.
struct Stand<'a> {
    partition: &'a Partition,
    led: &'a Led,
    pool: &'a PgPool,
    endpoints: &'a Endpoints,
    config: &'a WorkerConfig,
    liveness: &'a Liveness,
}

impl Stand<'_> {
    async fn run(self, pipeline: Pipeline, paused: PauseSignal, shutdown: Shutdown) {
        let Self { partition, led, pool, endpoints, config, liveness } = self;
        while let Some(leadership) =
            leadership::acquire(pool, partition, led, &config.id, config.batch_timeout, &shutdown).await
        {
            liveness.set_leading(partition.index, true);
            let lead = Lead {
                pipeline: &pipeline,
                leadership: &leadership,
                pool,
                endpoints,
                config,
                liveness,
                stop: shutdown.child(),
                lost: AtomicBool::new(false),
            };
            tokio::join!(intake::run(&lead, paused.clone()), claimer::run(&lead, paused.clone()));
            let lost = lead.lost.load(Ordering::SeqCst);
            liveness.set_leading(partition.index, false);
            leadership.give_up(pool, led, lost).await;
            if shutdown.is_triggered() {
                break;
            }
        }
        // One partition's loop ending on shutdown ends the others' too.
        shutdown.trigger();
    }
}

/// What the worker's side loops (relay, dead-letter drain, pause watcher)
/// share: where it works, who it is, what it reports, and the stop it obeys.
#[derive(Clone, Debug)]
pub(super) struct Context {
    pool: PgPool,
    endpoints: Endpoints,
    worker: String,
    liveness: Liveness,
    shutdown: Shutdown,
}

/// What the intake and the claimer of the partition's leader share.
pub(super) struct Lead<'a> {
    pipeline: &'a Pipeline,
    leadership: &'a Leadership,
    pool: &'a PgPool,
    endpoints: &'a Endpoints,
    config: &'a WorkerConfig,
    liveness: &'a Liveness,
    /// Triggered on shutdown, or when either loop finds the session lost.
    stop: Shutdown,
    lost: AtomicBool,
}

impl Lead<'_> {
    /// The leader's session is gone or cannot be trusted: both loops stop,
    /// and the worker gives up the partition.
    fn lose(&self, why: &dyn std::fmt::Display) {
        tracing::warn!(partition = %self.leadership.partition, error = %why, "lost the leader session; standing by again");
        self.lost.store(true, Ordering::SeqCst);
        self.stop.trigger();
    }

    fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

/// What a running worker reports about itself, shared with the health endpoint.
/// Leading, consuming and claiming are kept per partition, one bit each
/// (at most [`crate::config::MAX_PARTITIONS`] = 64): the worker does one
/// when any of its partitions does.
#[derive(Clone, Debug, Default)]
pub struct Liveness {
    leading: Arc<AtomicU64>,
    consuming: Arc<AtomicU64>,
    claiming: Arc<AtomicU64>,
    relaying: Arc<AtomicBool>,
    relay: Arc<std::sync::Mutex<RelayReport>>,
    /// Woken whenever one of the flags above changes, so the heartbeat says
    /// `paused` as soon as the last loop let go of its work, not at the next
    /// poll: a pause's latency is the notification plus the batch in flight.
    changed: Arc<tokio::sync::Notify>,
}

impl Liveness {
    fn set_bit(&self, bits: &AtomicU64, partition: u16, on: bool) {
        let bit = 1u64 << (partition % 64);
        let before = if on { bits.fetch_or(bit, Ordering::SeqCst) } else { bits.fetch_and(!bit, Ordering::SeqCst) };
        if (before & bit != 0) != on {
            self.changed.notify_one();
        }
    }

    /// Whether this worker leads one of its partitions (else it is a hot standby).
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst) != 0
    }

    /// How many partitions this worker leads.
    pub fn partitions_led(&self) -> u32 {
        self.leading.load(Ordering::SeqCst).count_ones()
    }

    fn set_leading(&self, partition: u16, leading: bool) {
        self.set_bit(&self.leading, partition, leading);
    }

    /// Whether the worker holds an open consumer on a partition queue right now.
    pub fn is_consuming(&self) -> bool {
        self.consuming.load(Ordering::SeqCst) != 0
    }

    fn set_consuming(&self, partition: u16, consuming: bool) {
        self.set_bit(&self.consuming, partition, consuming);
    }

    /// Whether a claimer is claiming or processing ledger rows right now.
    pub fn is_claiming(&self) -> bool {
        self.claiming.load(Ordering::SeqCst) != 0
    }

    fn set_claiming(&self, partition: u16, claiming: bool) {
        self.set_bit(&self.claiming, partition, claiming);
    }

    /// Whether the relay is publishing from the outbox right now.
    pub fn is_relaying(&self) -> bool {
        self.relaying.load(Ordering::SeqCst)
    }

    fn set_relaying(&self, relaying: bool) {
        if self.relaying.swap(relaying, Ordering::SeqCst) != relaying {
            self.changed.notify_one();
        }
    }

    /// Resolves once a flag changed since the last call (a change made before
    /// the call is not lost: `notify_one` keeps one permit).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// What the outbox relay last did.
    pub fn relay(&self) -> RelayReport {
        // A panic while the report was held leaves a report still worth reading.
        self.relay.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn report_relay(&self, update: impl FnOnce(&mut RelayReport)) {
        update(&mut self.relay.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_then_give_up() {
        let policy = RetryPolicy {
            max_attempts: 3,
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(1000),
            hold: Duration::from_millis(250),
        };
        let not_ready = HandlerError::NotReady("later".into());
        assert!(
            matches!(policy.after_failure(&not_ready, 0, true), Settlement::Held { .. }),
            "a missing dependency on first sight is held, not failed"
        );
        let Settlement::Retry { retry_at, .. } = policy.after_failure(&not_ready, 1, false) else {
            panic!("second failure should be retried");
        };
        let wait = (retry_at - Utc::now()).num_milliseconds();
        assert!((9_000..=30_000).contains(&wait), "second retry waits 20s ± 50%, got {wait} ms");
        assert!(matches!(policy.after_failure(&not_ready, 2, false), Settlement::Failed { .. }));
        let invalid = HandlerError::Invalid("bad".into());
        assert!(matches!(policy.after_failure(&invalid, 0, true), Settlement::Failed { .. }));
    }
}
