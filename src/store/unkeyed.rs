//! `replay_control.unkeyed_events`: events that arrived without a partition
//! key, counted per partition (they all go to the one partition the hash of
//! no key picks). Counted, never dropped. All SQL on that table lives here.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::{failed, StoreError};

/// Adds `events` to the partition's count, inside the batch's transaction.
pub async fn count(conn: &mut PgConnection, partition: i16, events: i64) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO replay_control.unkeyed_events (partition_index, events) VALUES ($1, $2)
         ON CONFLICT (partition_index) DO UPDATE
            SET events = unkeyed_events.events + EXCLUDED.events, last_seen_at = now()",
    )
    .bind(partition)
    .bind(events)
    .execute(conn)
    .await
    .map_err(failed("count events without a partition key"))?;
    Ok(())
}

/// Unkeyed events per partition, as operators read them.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct Unkeyed {
    pub partition_index: i16,
    pub events: i64,
    pub last_seen_at: DateTime<Utc>,
}

/// Every partition that received unkeyed events.
pub async fn all(pool: &PgPool) -> Result<Vec<Unkeyed>, StoreError> {
    sqlx::query_as(
        "SELECT partition_index, events, last_seen_at FROM replay_control.unkeyed_events ORDER BY partition_index",
    )
    .fetch_all(pool)
    .await
    .map_err(failed("read the unkeyed event counts"))
}
