//! The two-person rule (`replay console --require-approval`): a plan is
//! applied from the console only once an operator other than its maker
//! (`plan.header.created_by`, the token's name for plans made in the
//! console) approved that very file (its digest). [`approve`] records the
//! approval and its `plan.approve` audit entry in one transaction;
//! [`check`] is what the console's apply asks before `replay::apply::check`.
//!
//! A plan is approved once: approving it again is refused (with who approved
//! it and when), so each approval has exactly one audit entry. The operator
//! who applies may be the maker or anyone else; the rule is that two people
//! saw the plan, not who presses apply.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;

use crate::replay::plan::{PlanId, SealedPlan};
use crate::store::approvals::{self, Approval};
use crate::store::audit::{self, AuditEntry};
use crate::store::{failed, StoreError};

/// Why a plan was not approved, or may not be applied yet.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("the plan was made by {maker}: another operator must approve it (two-person rule)")]
    OwnPlan { plan: PlanId, maker: String },
    #[error("plan {plan} is approved already (by {by} at {at}): it needs no other approval; apply it")]
    AlreadyApproved { plan: PlanId, by: String, at: DateTime<Utc> },
    #[error(
        "plan {plan} needs the approval of an operator other than {maker} before it is applied (two-person rule): ask one to approve it"
    )]
    NotApproved { plan: PlanId, maker: String },
    #[error(
        "plan {plan} was approved by {by} as another file (digest {approved}; this file is {found}): it changed after it was approved, so make a new plan and have it approved"
    )]
    OtherDigest { plan: PlanId, by: String, approved: String, found: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `operator` approves `plan`: refused when `operator` made it or when it is
/// approved already; otherwise the approval and its `plan.approve` audit
/// entry (plan id, digest, approver) commit together.
pub async fn approve(pool: &PgPool, plan: &SealedPlan, operator: &str) -> Result<Approval, ApprovalError> {
    let plan_id = plan.header.plan_id;
    if operator == plan.header.created_by {
        return Err(ApprovalError::OwnPlan { plan: plan_id, maker: plan.header.created_by.clone() });
    }
    let mut tx = pool.begin().await.map_err(failed("approve a plan"))?;
    let Some(approval) = approvals::insert(&mut tx, plan_id, &plan.digest, operator).await? else {
        drop(tx);
        return Err(already(pool, plan).await);
    };
    let entry = AuditEntry {
        operator: operator.to_string(),
        action: "plan.approve".into(),
        details: json!({"plan_id": plan_id, "digest": plan.digest, "approver": operator}),
    };
    audit::append(&mut tx, &entry).await?;
    tx.commit().await.map_err(failed("approve a plan"))?;
    Ok(approval)
}

/// The refusal for a plan that has an approval already (another file's,
/// if the file changed since).
async fn already(pool: &PgPool, plan: &SealedPlan) -> ApprovalError {
    match approvals::find(pool, plan.header.plan_id).await {
        Ok(Some(found)) if found.plan_digest != plan.digest => other_digest(plan, found),
        Ok(Some(found)) => {
            ApprovalError::AlreadyApproved { plan: plan.header.plan_id, by: found.approved_by, at: found.approved_at }
        }
        // Nothing to show: the row that was there a moment ago was not read.
        Ok(None) => ApprovalError::NotApproved { plan: plan.header.plan_id, maker: plan.header.created_by.clone() },
        Err(error) => error.into(),
    }
}

fn other_digest(plan: &SealedPlan, found: Approval) -> ApprovalError {
    ApprovalError::OtherDigest {
        plan: plan.header.plan_id,
        by: found.approved_by,
        approved: found.plan_digest,
        found: plan.digest.clone(),
    }
}

/// Whether `plan` may be applied (by `operator`, the maker or another): it
/// needs an approval of this file's digest. Refusals change nothing.
pub async fn check(pool: &PgPool, plan: &SealedPlan, operator: &str) -> Result<(), ApprovalError> {
    let refusal = match approvals::find(pool, plan.header.plan_id).await? {
        Some(found) if found.plan_digest == plan.digest => return Ok(()),
        Some(found) => other_digest(plan, found),
        None => ApprovalError::NotApproved { plan: plan.header.plan_id, maker: plan.header.created_by.clone() },
    };
    tracing::info!(plan = %plan.header.plan_id, operator, refusal = %refusal, "apply refused by the two-person rule");
    Err(refusal)
}
