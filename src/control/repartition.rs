//! `replay topology repartition --to M`: changes how many partitions the
//! stream is spread over. Offline and checked, since the consistent-hash
//! exchange maps keys by the number of queues bound to it: with anything
//! in flight, a key would be applied in two partitions at once.
//!
//! Invariant: nothing is removed or re-bound unless, just before, the
//! workers are paused, none reports in any more (a paused worker still runs
//! with the old count and would declare the old layout again on resume),
//! every partition queue and dead-letter queue is empty with no consumer,
//! and no ledger row is pending or processing (each is its partition's).

use serde_json::json;
use sqlx::PgPool;

use crate::config::Endpoints;
use crate::store::audit::{self, AuditEntry};
use crate::store::heartbeats;
use crate::store::{failed, ledger, partitioning, pause, StoreError};
use crate::wire::transport::{self, TransportError};

/// Why a repartition did not happen; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum RepartitionError {
    #[error("the system already runs {0} partition(s): nothing to change")]
    Same(u16),
    #[error("the workers are not paused: run `replay pause --reason ...` first, let the partition queues drain, stop every worker, then run this again")]
    NotPaused,
    #[error("worker(s) {0} still report in: stop every worker first (one still running with the old count would declare the old queues again), then run this again")]
    WorkersRunning(String),
    #[error("queue '{queue}' holds {messages} message(s) and {consumers} consumer(s): every partition queue must be drained and unconsumed. Resume the workers until it is empty (`replay status`), pause and stop them, then run this again")]
    QueueNotEmpty { queue: String, messages: u32, consumers: u32 },
    #[error("{0} ledger row(s) are pending or processing, each its partition's: let them settle (resume until `replay status` shows none) or resolve them, then run this again")]
    RowsUnsettled(i64),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RepartitionError {
    /// Whether this is a refusal (the operator's to fix) rather than a failure.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Self::Transport(_) | Self::Store(_))
    }
}

/// What a repartition did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Repartitioned {
    pub from: u16,
    pub to: u16,
    pub removed: Vec<String>,
    pub declared: Vec<String>,
    pub audit_id: i64,
}

/// Checks, then moves the stream from the recorded count (or `endpoints`'
/// when none is recorded) to `to` partitions, and records it with an audit
/// entry in one transaction.
pub async fn repartition(
    pool: &PgPool,
    endpoints: &Endpoints,
    to: u16,
    operator: &str,
    reason: &str,
) -> Result<Repartitioned, RepartitionError> {
    let from = partitioning::recorded(pool).await?.map_or(endpoints.partitions, |(n, _)| n);
    if from == to {
        return Err(RepartitionError::Same(to));
    }
    if pause::current(pool).await?.is_none() {
        return Err(RepartitionError::NotPaused);
    }
    let (live, _) = heartbeats::live_and_stale(pool, heartbeats::LIVE_WITHIN).await?;
    if !live.is_empty() {
        let names: Vec<String> = live.into_iter().map(|h| h.worker_id).collect();
        return Err(RepartitionError::WorkersRunning(names.join(", ")));
    }
    let old = Endpoints { partitions: from, ..endpoints.clone() };
    let new = Endpoints { partitions: to, ..endpoints.clone() };
    let connection = transport::connect(&endpoints.amqp_url, "replay topology repartition").await?;
    let moved = async {
        for partition in old.partition_list() {
            for queue in [partition.queue.clone(), transport::dead_letter_queue(&partition.queue)] {
                ensure_empty(&connection, &queue).await?;
            }
        }
        let unsettled = ledger::count_unsettled(pool).await?;
        if unsettled > 0 {
            return Err(RepartitionError::RowsUnsettled(unsettled));
        }
        // The new layout first: a broker that cannot hold it (no hash
        // exchange) refuses before anything of the old one is touched.
        let channel = transport::channel(&connection).await?;
        transport::declare_stream(&channel, &new).await?;
        let retired = transport::retire_stream(&channel, &old, &new).await?;
        // Unrouted now: what is in them arrived since the check (a producer
        // publishing during the move) and must not be deleted with them.
        for queue in &retired {
            ensure_empty(&connection, queue).await?;
        }
        for queue in &retired {
            transport::delete_queue(&channel, queue).await?;
        }
        Ok(retired)
    }
    .await;
    transport::close(&connection, "repartitioned").await;
    let removed = moved?;
    let mut tx = pool.begin().await.map_err(failed("record the repartition"))?;
    partitioning::set(&mut tx, to).await?;
    let entry = AuditEntry {
        operator: operator.to_string(),
        action: "topology.repartition".into(),
        details: json!({"from": from, "to": to, "reason": reason}),
    };
    let record = audit::append(&mut tx, &entry).await?;
    tx.commit().await.map_err(failed("record the repartition"))?;
    let declared = new.partition_list().into_iter().map(|p| p.queue).collect();
    Ok(Repartitioned { from, to, removed, declared, audit_id: record.id })
}

/// Refuses unless `queue` is empty with no consumer (a queue that is not
/// there is empty). Asked on a channel of its own: a missing queue closes it.
async fn ensure_empty(connection: &lapin::Connection, queue: &str) -> Result<(), RepartitionError> {
    let probe = transport::channel(connection).await?;
    match transport::queue_counts(&probe, queue).await {
        Ok(c) if c.messages > 0 || c.consumers > 0 => Err(RepartitionError::QueueNotEmpty {
            queue: queue.to_string(),
            messages: c.messages,
            consumers: c.consumers,
        }),
        Ok(_) => {
            let _ = transport::answer("close a probe", probe.close(200, "looked".into())).await;
            Ok(())
        }
        Err(TransportError::Broker { source, .. }) if transport::protocol_code(&source) == Some(404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
