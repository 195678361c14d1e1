//! `--workflow period-close --period ID|latest-closed`: the runbook's
//! "Replay Period Close". Reopens the period, marks its calculated
//! allocations pending, and triggers `period.close`, which recomputes them.
//! The trigger carries the period's original closing time, so a close
//! replayed over unchanged contributions leaves every row as it was.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::PgConnection;

use super::{fingerprint, refuse_handed_out, uuid_param, Inspection, Params, TriggerSpec, Workflow, WorkflowError};
use crate::handlers::{allocation, period};

const USAGE: &str = "--period ID|latest-closed";

pub struct PeriodClose;

#[async_trait]
impl Workflow for PeriodClose {
    fn name(&self) -> &'static str {
        "period-close"
    }

    fn usage(&self) -> &'static str {
        USAGE
    }

    async fn inspect(&self, conn: &mut PgConnection, params: &Params) -> Result<Inspection, WorkflowError> {
        let found = if params.get("period").map(String::as_str) == Some("latest-closed") {
            period::latest_closed(conn)
                .await?
                .ok_or_else(|| WorkflowError::Refused("there is no closed period to replay the close of".into()))?
        } else {
            let id = uuid_param(params, "period", USAGE)?;
            period::find(conn, id)
                .await?
                .ok_or_else(|| WorkflowError::Usage(format!("period {id} does not exist: check --period")))?
        };
        let allocations = allocation::of(conn, found.id, None).await?;
        let what = format!("period {}", found.id);
        refuse_handed_out(&allocations, &what)?;
        let calculated = allocations.iter().filter(|a| a.status == "calculated").count();
        let mut steps = Vec::new();
        if found.status == "closed" {
            steps.push(format!(
                "reopen {what} (ended {}, closed at {})",
                found.end_date,
                found.closed_at.map_or("?".into(), |t| t.to_rfc3339())
            ));
        } else {
            steps.push(format!("{what} is open (its close did not complete): leave it open"));
        }
        steps.push(format!("mark its {calculated} calculated allocation(s) pending"));
        let occurred_at = found.closed_at.unwrap_or_else(Utc::now);
        steps.push(format!(
            "publish period.close for {what} (occurred_at {}), which recomputes its allocations",
            occurred_at.to_rfc3339()
        ));
        let state = std::iter::once(format!("{}|{}|{:?}", found.id, found.status, found.closed_at)).chain(
            allocations.iter().map(|a| format!("{}|{}|{}|{}", a.member_id, a.status, a.amount, a.calculated_at)),
        );
        Ok(Inspection {
            params: BTreeMap::from([("period".to_string(), found.id.to_string())]),
            steps,
            domain_rows: BTreeMap::from([
                ("allocation_periods".to_string(), i64::from(found.status == "closed")),
                ("allocations".to_string(), calculated as i64),
            ]),
            fingerprint: fingerprint(state),
            triggers: vec![TriggerSpec {
                event_type: "period.close".into(),
                occurred_at,
                payload: serde_json::json!({ "period_id": found.id }),
            }],
        })
    }

    async fn reset(&self, conn: &mut PgConnection, params: &Params) -> Result<(), WorkflowError> {
        let id = uuid_param(params, "period", USAGE)?;
        period::reopen(conn, id).await?;
        allocation::mark_pending(conn, id, None).await?;
        Ok(())
    }
}
