//! Where a plan's replay stands: its run, its rows by status, the rate and
//! the time left, its failures. `replay status PLAN` prints it; the
//! console's plan page and `GET /api/v1/plans/{id}/status` show the same.

use std::collections::BTreeMap;

use chrono::Utc;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::replay::plan::SealedPlan;
use crate::store::{ledger, outbox, runs, StoreError};

/// A plan's progress report.
pub struct PlanReport {
    /// What `replay status PLAN --json` prints.
    pub report: Value,
    /// Nothing is left to publish or to process.
    pub settled: bool,
}

/// Reads the progress of `plan`.
pub async fn plan_report(pool: &PgPool, plan: &SealedPlan) -> Result<PlanReport, StoreError> {
    let plan_id = plan.header.plan_id;
    let run = runs::find(pool, plan_id).await?;
    let progress = ledger::plan_progress(pool, plan_id.as_uuid()).await?;
    let failures = ledger::plan_failures(pool, plan_id.as_uuid()).await?;
    let in_outbox = outbox::count_for_plan(pool, plan_id).await?;
    let events = plan.events() as i64;
    let (done, open) = (progress.done(), progress.open());
    let mut by_status: BTreeMap<&str, i64> = progress.by_status.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    if progress.waiting > 0 {
        by_status.insert("waiting", progress.waiting);
    }
    let (rate, eta) = match &run {
        Some(run) => {
            let elapsed =
                (run.finished_at.unwrap_or_else(Utc::now) - run.started_at).num_milliseconds().max(1) as f64 / 1000.0;
            let rate = done as f64 / elapsed;
            (Some(rate), (rate > 0.0 && open > 0).then(|| open as f64 / rate))
        }
        None => (None, None),
    };
    let state = run.as_ref().map_or("not applied", |r| r.shown_state());
    let report = json!({
        "plan_id": plan_id,
        "plan_path": plan.path,
        "reason": plan.header.reason,
        "state": state,
        "events": events,
        "published": run.as_ref().map_or(0, |r| r.published),
        "in_outbox": in_outbox,
        "by_status": by_status,
        "rate_per_second": rate,
        "eta_seconds": eta,
        "failures": failures,
        "halted": run.as_ref().and_then(|r| r.halted_reason.as_ref().map(|reason| json!({"at": r.halted_at, "reason": reason}))),
    });
    let republished = run.as_ref().is_some_and(|r| !r.state.is_open());
    Ok(PlanReport { report, settled: republished && open == 0 })
}
