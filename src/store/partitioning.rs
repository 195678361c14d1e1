//! `replay_control.partitioning`: how many partitions the stream is spread
//! over. The first process that declares the topology records its count;
//! every later one must run with the same, and only `replay topology
//! repartition` changes it (offline, checked). All SQL on that table lives here.
//!
//! Invariant: a key is applied by one partition at a time. The consistent-
//! hash exchange maps a key to a partition by the number of queues bound to
//! it, so two processes running with different counts would apply one key
//! in two partitions at once; this record is what makes them refuse.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::{failed, StoreError};

/// Why a process may not run with the partition count it was given.
#[derive(Debug, thiserror::Error)]
pub enum PartitioningError {
    #[error("this process was started with --partitions {given} (or REPLAY_PARTITIONS), but the system runs {recorded} partition(s) since {since}: start it with --partitions {recorded} (REPLAY_PARTITIONS={recorded}). To change it for every process at once: `replay topology repartition --to {given} --reason ...` (workers paused and stopped, partition queues drained)")]
    Mismatch { given: u16, recorded: u16, since: DateTime<Utc> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The recorded count, if any, and since when.
pub async fn recorded(pool: &PgPool) -> Result<Option<(u16, DateTime<Utc>)>, StoreError> {
    let row: Option<(i16, DateTime<Utc>)> = sqlx::query_as("SELECT partitions, since FROM replay_control.partitioning")
        .fetch_optional(pool)
        .await
        .map_err(failed("read the partition count"))?;
    Ok(row.map(|(n, since)| (u16::try_from(n).unwrap_or(1), since)))
}

/// Records `given` if no count is recorded yet, then checks `given` is the
/// recorded count. A system that never ran partitions has the count 1.
pub async fn check(pool: &PgPool, given: u16) -> Result<(), PartitioningError> {
    sqlx::query("INSERT INTO replay_control.partitioning (partitions) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(i16::try_from(given).unwrap_or(i16::MAX))
        .execute(pool)
        .await
        .map_err(failed("record the partition count"))?;
    match recorded(pool).await? {
        Some((recorded, since)) if recorded != given => Err(PartitioningError::Mismatch { given, recorded, since }),
        _ => Ok(()),
    }
}

/// Sets the count, inside the caller's transaction (`replay topology
/// repartition`, after its checks, with its audit entry).
pub async fn set(conn: &mut PgConnection, partitions: u16) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO replay_control.partitioning (partitions) VALUES ($1)
         ON CONFLICT (singleton) DO UPDATE SET partitions = EXCLUDED.partitions, since = now()",
    )
    .bind(i16::try_from(partitions).unwrap_or(i16::MAX))
    .execute(conn)
    .await
    .map_err(failed("record the new partition count"))?;
    Ok(())
}
