//! Topology migrations in progress, `replay_control.topology_migrations`:
//! a queue whose `replay topology migrate` left holding queues for its
//! leader to drain first. Recorded before the move starts, so a move cut
//! short is still drained; forgotten once the holding queues are gone. All
//! SQL on that table lives here.

use sqlx::PgPool;

use super::{failed, StoreError};

/// Records that `queue` is being migrated.
pub async fn record(pool: &PgPool, queue: &str) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO replay_control.topology_migrations (queue) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(queue)
        .execute(pool)
        .await
        .map_err(failed("record a topology migration"))?;
    Ok(())
}

/// Whether a migration of `queue` left holding queues to drain.
pub async fn recorded(pool: &PgPool, queue: &str) -> Result<bool, StoreError> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM replay_control.topology_migrations WHERE queue = $1)")
        .bind(queue)
        .fetch_one(pool)
        .await
        .map_err(failed("read topology migrations"))
}

/// The holding queues of `queue` are drained and gone.
pub async fn forget(pool: &PgPool, queue: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM replay_control.topology_migrations WHERE queue = $1")
        .bind(queue)
        .execute(pool)
        .await
        .map_err(failed("forget a topology migration"))?;
    Ok(())
}
