//! The pause, `replay_control.pause`: durable state in the control plane, so
//! it survives a restore of the domain. While it holds, `replay apply`
//! refuses to start and stops publishing. All SQL on that table lives here.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Who paused, when, and why.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct Pause {
    pub paused_at: DateTime<Utc>,
    pub operator: String,
    pub reason: String,
}

/// The pause in force, if any.
pub async fn current(pool: &PgPool) -> Result<Option<Pause>, sqlx::Error> {
    sqlx::query_as("SELECT paused_at, operator, reason FROM replay_control.pause").fetch_optional(pool).await
}
