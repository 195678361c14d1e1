//! Which worker applies a partition: the one whose database session holds
//! the partition's advisory lock. The others are hot standbys: connected,
//! trying the lock every quarter second, consuming nothing.
//!
//! Architecture invariants:
//! - Every batch of the partition runs on the leader's own session (never a
//!   pooled connection): a worker whose session is gone cannot commit
//!   anything, and Postgres frees the lock only when that session ends, so a
//!   worker that loses leadership has stopped applying before another one
//!   can start. No split brain, whatever the network does.
//! - A standby never opens a consumer on the partition queue: it subscribes
//!   only once it holds the lock, after the old leader's connection closed,
//!   so the broker has already put the old leader's unacked messages back in
//!   order (single active consumer on the queue is the second guard).
//! - A session the worker abandons (a statement it stopped waiting for) is
//!   terminated through the pool, so a frozen session does not keep the lock.

use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool};

use super::signals::Shutdown;
use crate::config::Partition;
use crate::store::{failed, leaders, ledger, StoreError};

/// Longest an abandoned session's terminate may take.
const TERMINATE_WITHIN: Duration = Duration::from_secs(5);
/// How often a standby tries the lock.
const TRY_EVERY: Duration = Duration::from_millis(250);

/// The leader's session: while it lives, this worker alone applies the partition.
pub struct Leadership {
    /// Shared by the intake and the claimer: one batch after another.
    pub session: tokio::sync::Mutex<PgConnection>,
    backend_pid: i32,
    pub partition: Partition,
    /// Raised by every takeover; who leads and since when, for operators.
    pub epoch: i64,
}

/// How eagerly a worker takes a partition that has no leader: at once when
/// it leads none, else after waiting [`TRY_EVERY`] times this many rounds
/// per partition it already leads. Workers started together so spread one
/// partition each, and a partition whose leader died goes to a standby
/// that leads nothing before a busy worker takes it on as well.
pub const ROUNDS_PER_LED_PARTITION: u32 = 8;

/// How many partitions this worker process leads right now, shared by its
/// partition loops (the spreading rule above). The lock is held across a
/// try and its count, so two loops of one worker never both take a
/// partition in the same round.
#[derive(Clone, Debug, Default)]
pub struct Led(std::sync::Arc<tokio::sync::Mutex<u32>>);

impl Led {
    async fn give_back(&self) {
        let mut count = self.0.lock().await;
        *count = count.saturating_sub(1);
    }
}

/// Waits as a hot standby until this worker leads `partition`, or shutdown
/// (`None`). Database failures are waited out.
pub async fn acquire(
    pool: &PgPool,
    partition: &Partition,
    led: &Led,
    worker: &str,
    session_timeout: Duration,
    shutdown: &Shutdown,
) -> Option<Leadership> {
    let mut delay = Duration::from_millis(200);
    loop {
        match try_acquire(pool, partition, led, worker, session_timeout, shutdown).await {
            Ok(leadership) => return leadership,
            Err(e) => {
                let queue = partition.queue.as_str();
                tracing::warn!(error = %e, partition = queue, retry_in = ?delay, "cannot stand by for the partition; retrying");
                if !shutdown.sleep(delay).await {
                    return None;
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn try_acquire(
    pool: &PgPool,
    partition: &Partition,
    led: &Led,
    worker: &str,
    session_timeout: Duration,
    shutdown: &Shutdown,
) -> Result<Option<Leadership>, StoreError> {
    let mut session =
        PgConnection::connect_with(&pool.connect_options()).await.map_err(failed("open the leader session"))?;
    // A transaction left open by a leader that stopped talking (frozen,
    // partitioned away) is ended by the server, which frees the lock; the
    // keepalives find a peer that vanished without closing its socket.
    let millis = session_timeout.as_millis().max(1000);
    for setting in [
        format!("SET idle_in_transaction_session_timeout = {millis}"),
        "SET tcp_keepalives_idle = 5".to_string(),
        "SET tcp_keepalives_interval = 2".to_string(),
        "SET tcp_keepalives_count = 3".to_string(),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(setting))
            .execute(&mut session)
            .await
            .map_err(failed("configure the leader session"))?;
    }
    let backend_pid: i32 =
        sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut session).await.map_err(failed("read pid"))?;
    let mut announced = false;
    let mut rounds = 0u32;
    let name = partition.queue.as_str();
    loop {
        // Held across the try and the count (see `Led`).
        let mut count = led.0.lock().await;
        let wait = *count > 0 && rounds < *count * ROUNDS_PER_LED_PARTITION;
        if !wait {
            let took: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended('replay partition ' || $1, 0))")
                    .bind(name)
                    .fetch_one(&mut session)
                    .await
                    .map_err(failed("try the partition lock"))?;
            if took {
                *count += 1;
                break;
            }
            rounds = 0;
        }
        drop(count);
        rounds += 1;
        if !announced {
            tracing::info!(partition = name, "standing by: another worker leads the partition");
            announced = true;
        }
        tokio::select! {
            () = shutdown.triggered() => {
                let _ = session.close().await;
                return Ok(None);
            }
            () = tokio::time::sleep(TRY_EVERY) => {}
        }
    }
    // Counted from here on: a failure below drops the session (and the
    // lock), so the count is given back first.
    let recorded = async {
        let epoch = leaders::record(&mut session, name, worker).await?;
        let expired = ledger::expire_leases(&mut session, partition.ledger_index()).await?;
        Ok::<_, StoreError>((epoch, expired))
    }
    .await;
    let (epoch, expired) = match recorded {
        Ok(done) => done,
        Err(e) => {
            led.give_back().await;
            return Err(e);
        }
    };
    tracing::info!(partition = name, epoch, leases_taken_back = expired, "leading the partition");
    let session = tokio::sync::Mutex::new(session);
    Ok(Some(Leadership { session, backend_pid, partition: partition.clone(), epoch }))
}

impl Leadership {
    /// Gives the partition up. An `abandoned` session (a statement left
    /// mid-way, or a session that stopped answering) is also terminated,
    /// over a fresh connection and within [`TERMINATE_WITHIN`]: its socket
    /// may still look alive to the server, and the pool's idle connections
    /// may sit on the same frozen path (a statement on one of them would
    /// never return, and this worker would never stand by again). If the
    /// terminate fails, the server's idle-in-transaction timeout and
    /// keepalives end the session.
    pub async fn give_up(self, pool: &PgPool, led: &Led, abandoned: bool) {
        let Self { session, backend_pid, partition, .. } = self;
        let partition = partition.queue;
        let session = session.into_inner();
        if abandoned {
            drop(session);
            let terminate = async {
                let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
                let terminated = sqlx::query_scalar::<_, bool>("SELECT pg_terminate_backend($1)")
                    .bind(backend_pid)
                    .fetch_one(&mut conn)
                    .await;
                let _ = conn.close().await;
                terminated
            };
            let terminated = tokio::time::timeout(TERMINATE_WITHIN, terminate)
                .await
                .map_err(|_| format!("no answer within {TERMINATE_WITHIN:?}"))
                .and_then(|done| done.map_err(|e| e.to_string()));
            tracing::warn!(partition, backend_pid, ?terminated, "gave up the partition: its session was abandoned");
        } else {
            // Ending the session frees the lock.
            let _ = tokio::time::timeout(Duration::from_secs(5), session.close()).await;
            tracing::info!(partition, "gave up the partition");
        }
        led.give_back().await;
    }
}
