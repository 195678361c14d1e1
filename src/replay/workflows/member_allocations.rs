//! `--workflow member-allocations --member ID --period ID`: the runbook's
//! "Replay Allocations for Member". Marks the member's calculated allocation
//! pending and triggers `allocation.calculate`, which recomputes it from the
//! member's approved contributions. The trigger carries the allocation's
//! original calculation time, so an unchanged allocation stays as it was.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::PgConnection;

use super::{fingerprint, refuse_handed_out, uuid_param, Inspection, Params, TriggerSpec, Workflow, WorkflowError};
use crate::handlers::{allocation, period};

const USAGE: &str = "--member ID --period ID";

pub struct MemberAllocations;

#[async_trait]
impl Workflow for MemberAllocations {
    fn name(&self) -> &'static str {
        "member-allocations"
    }

    fn usage(&self) -> &'static str {
        USAGE
    }

    async fn inspect(&self, conn: &mut PgConnection, params: &Params) -> Result<Inspection, WorkflowError> {
        let member = uuid_param(params, "member", USAGE)?;
        let period_id = uuid_param(params, "period", USAGE)?;
        if period::find(conn, period_id).await?.is_none() {
            return Err(WorkflowError::Usage(format!("period {period_id} does not exist: check --period")));
        }
        let allocations = allocation::of(conn, period_id, Some(member)).await?;
        let what = format!("member {member} in period {period_id}");
        refuse_handed_out(&allocations, &what)?;
        let calculated = allocations.iter().filter(|a| a.status == "calculated").count();
        let occurred_at = allocations.first().map_or_else(Utc::now, |a| a.calculated_at);
        let steps = vec![
            format!("mark the {calculated} calculated allocation(s) of {what} pending"),
            format!("publish allocation.calculate for {what} (occurred_at {})", occurred_at.to_rfc3339()),
        ];
        let state =
            allocations.iter().map(|a| format!("{}|{}|{}|{}", a.member_id, a.status, a.amount, a.calculated_at));
        Ok(Inspection {
            params: BTreeMap::from([
                ("member".to_string(), member.to_string()),
                ("period".to_string(), period_id.to_string()),
            ]),
            steps,
            domain_rows: BTreeMap::from([("allocations".to_string(), calculated as i64)]),
            fingerprint: fingerprint(state),
            triggers: vec![TriggerSpec {
                event_type: "allocation.calculate".into(),
                occurred_at,
                payload: serde_json::json!({ "member_id": member, "period_id": period_id }),
            }],
        })
    }

    async fn reset(&self, conn: &mut PgConnection, params: &Params) -> Result<(), WorkflowError> {
        let member = uuid_param(params, "member", USAGE)?;
        let period_id = uuid_param(params, "period", USAGE)?;
        allocation::mark_pending(conn, period_id, Some(member)).await?;
        Ok(())
    }
}
