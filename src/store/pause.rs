//! The pause, `replay_control.pause`: durable state in the control plane, so
//! it survives a restore of the domain. While it holds, workers take no work
//! (they hear of it through `NOTIFY replay_pause` and by polling) and
//! `replay apply` refuses to start or stops publishing. All SQL on that
//! table lives here.

use super::{failed, StoreError};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

/// The channel a pause or a resume is announced on.
pub const CHANNEL: &str = "replay_pause";

/// Who paused, when, and why.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct Pause {
    pub paused_at: DateTime<Utc>,
    pub operator: String,
    pub reason: String,
}

/// The pause in force, if any.
pub async fn current(pool: &PgPool) -> Result<Option<Pause>, StoreError> {
    sqlx::query_as("SELECT paused_at, operator, reason FROM replay_control.pause")
        .fetch_optional(pool)
        .await
        .map_err(failed("read the pause"))
}

/// Pauses, inside the caller's transaction; returns the new pause, or `None`
/// if one was already in force (it is left as it was).
pub async fn set(conn: &mut PgConnection, operator: &str, reason: &str) -> Result<Option<Pause>, StoreError> {
    sqlx::query_as(
        "INSERT INTO replay_control.pause (operator, reason) VALUES ($1, $2)
         ON CONFLICT (singleton) DO NOTHING
         RETURNING paused_at, operator, reason",
    )
    .bind(operator)
    .bind(reason)
    .fetch_optional(conn)
    .await
    .map_err(failed("set the pause"))
}

/// Lifts the pause, inside the caller's transaction; returns the pause it
/// lifted, or `None` if there was none.
pub async fn lift(conn: &mut PgConnection) -> Result<Option<Pause>, StoreError> {
    sqlx::query_as("DELETE FROM replay_control.pause RETURNING paused_at, operator, reason")
        .fetch_optional(conn)
        .await
        .map_err(failed("lift the pause"))
}
