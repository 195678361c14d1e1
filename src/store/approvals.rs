//! `replay_control.plan_approvals`: the approvals of the two-person rule,
//! one per plan, each naming the digest of the plan file approved and the
//! operator who approved it. All SQL on that table lives here; the rule
//! itself (who may approve, what an apply needs) is `control::approvals`.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::{failed, StoreError};
use crate::replay::plan::id::PlanId;

/// An approval as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct Approval {
    pub plan_id: PlanId,
    /// The digest of the plan file that was approved.
    pub plan_digest: String,
    pub approved_by: String,
    pub approved_at: DateTime<Utc>,
}

/// Records an approval inside the caller's transaction; `None` if the plan
/// has one already (the first approval stays, unchanged).
pub async fn insert(
    conn: &mut PgConnection,
    plan_id: PlanId,
    plan_digest: &str,
    approved_by: &str,
) -> Result<Option<Approval>, StoreError> {
    sqlx::query_as(
        "INSERT INTO replay_control.plan_approvals (plan_id, plan_digest, approved_by) VALUES ($1, $2, $3)
         ON CONFLICT (plan_id) DO NOTHING
         RETURNING plan_id, plan_digest, approved_by, approved_at",
    )
    .bind(plan_id)
    .bind(plan_digest)
    .bind(approved_by)
    .fetch_optional(conn)
    .await
    .map_err(failed("record a plan approval"))
}

/// The approval of `plan_id`, if it has one.
pub async fn find(pool: &PgPool, plan_id: PlanId) -> Result<Option<Approval>, StoreError> {
    sqlx::query_as(
        "SELECT plan_id, plan_digest, approved_by, approved_at FROM replay_control.plan_approvals WHERE plan_id = $1",
    )
    .bind(plan_id)
    .fetch_optional(pool)
    .await
    .map_err(failed("read a plan approval"))
}
