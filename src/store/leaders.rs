//! Partition leaders, `replay_control.partition_leaders`: who took each
//! partition last and with which epoch, raised at every takeover so an
//! operator can tell a failover happened. The lock itself is the leader
//! session's advisory lock (`worker::leadership`); this table only records
//! it. All SQL on that table lives here.

use sqlx::{PgConnection, PgPool};

use super::{failed, StoreError};

/// Records `worker` as the partition's leader, raising its epoch; returns
/// the new epoch. Runs on the leader's own session, after it took the lock.
pub async fn record(session: &mut PgConnection, partition: &str, worker: &str) -> Result<i64, StoreError> {
    sqlx::query_scalar(
        "INSERT INTO replay_control.partition_leaders (partition, worker_id, epoch) VALUES ($1, $2, 1)
         ON CONFLICT (partition) DO UPDATE
            SET worker_id = EXCLUDED.worker_id, epoch = partition_leaders.epoch + 1, since = now()
         RETURNING epoch",
    )
    .bind(partition)
    .bind(worker)
    .fetch_one(session)
    .await
    .map_err(failed("record the partition leader"))
}

/// Who leads a partition, as operators read it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct PartitionLeader {
    pub partition: String,
    pub worker_id: String,
    pub epoch: i64,
    pub since: chrono::DateTime<chrono::Utc>,
}

/// The last recorded leader of every partition.
pub async fn all(pool: &PgPool) -> Result<Vec<PartitionLeader>, StoreError> {
    sqlx::query_as("SELECT partition, worker_id, epoch, since FROM replay_control.partition_leaders ORDER BY partition")
        .fetch_all(pool)
        .await
        .map_err(failed("read the partition leaders"))
}
