//! The pre-replay backup and the one reset transaction, run side by side.
//!
//! Invariants:
//! - The audit entry, the run record and the resets (ledger rows with their
//!   history, a workflow's domain rows and trigger events) commit together
//!   or not at all, and only once the pre-replay dump is taken and checked:
//!   a failed backup rolls the reset back. A resumed apply finds the run
//!   record and never comes here again ([`super::execute`]).
//! - A plan row is reset only at the version it was planned at, checked by
//!   the reset statement itself under its row locks, and the workflow's
//!   domain is checked again inside the transaction: a change since
//!   [`super::check`] rolls everything back as a refusal.
//! - A reset row stays parked for its plan: its republished message takes it
//!   at once, claimers only after the plan's fallback time, so `--rate`
//!   paces the replay and a row whose message is lost is still processed.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use super::checks::{self, Checked};
use super::{ApplyError, BackupSource, Refusal, Request, StepTimes, RESET_CHUNK};
use crate::config::Endpoints;
use crate::replay::plan::SealedPlan;
use crate::replay::workflows::{self, WorkflowError};
use crate::store::audit::{self, AuditEntry};
use crate::store::backup;
use crate::store::failed;
use crate::store::ledger::{self, RowVersion};
use crate::store::runs::{self, NewRun, ReplayRun, RunState};
use crate::wire::envelope::Event;

/// How long after its expected republish a reset row waits for its message
/// before claimers take it anyway.
const FALLBACK_GRACE: Duration = Duration::from_secs(600);

/// A plan backed up and reset, committed: its run, and how long each took.
pub(super) struct Prepared {
    pub run: ReplayRun,
    pub steps: StepTimes,
}

/// The reset transaction, not yet committed, and the run it records.
struct Reset<'p> {
    tx: Transaction<'p, Postgres>,
    run: ReplayRun,
}

/// Takes the backup and resets the rows at the same time, safely: the dump
/// reads a snapshot exported before the reset began, so it holds the
/// pre-replay state, and the reset commits only once the dump is checked.
/// A failed backup rolls the reset back.
pub(super) async fn back_up_and_reset(
    pool: &PgPool,
    endpoints: &Endpoints,
    checked: &Checked,
    request: &Request,
) -> Result<Prepared, ApplyError> {
    let started = Instant::now();
    let plan = &checked.plan;
    let (backup_path, mut snapshot) = match (&checked.existing_backup, &request.backup) {
        (Some(path), _) | (None, BackupSource::Existing { path, .. }) => (path.clone(), None),
        (None, BackupSource::Fresh { dir }) => {
            let mut tx = pool.begin().await.map_err(failed("exporting a snapshot for the backup"))?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await
                .map_err(failed("exporting a snapshot for the backup"))?;
            let id: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
                .fetch_one(&mut *tx)
                .await
                .map_err(failed("exporting a snapshot for the backup"))?;
            (backup::path_in(dir), Some((tx, id)))
        }
    };
    let label = backup_path.display().to_string();
    let backup = async {
        let Some((_, id)) = &snapshot else { return Ok(started.elapsed()) };
        backup::take_at(&endpoints.database_url, backup_path.clone(), Some(id)).await?;
        tracing::info!(path = %label, seconds = started.elapsed().as_secs_f64(), "backup checked");
        Ok::<_, ApplyError>(started.elapsed())
    };
    let reset = async {
        let done = reset(pool, plan, request, &label).await?;
        Ok::<_, ApplyError>((done, started.elapsed()))
    };
    let (backup, reset) = tokio::join!(backup, reset);
    if let Some((tx, _)) = snapshot.take() {
        let _ = tx.rollback().await;
    }
    let backup_time = backup?;
    let (Reset { tx, run }, reset_time) = reset?;
    tx.commit().await.map_err(failed("committing the reset"))?;
    tracing::info!(rows = plan.summary.rows, seconds = reset_time.as_secs_f64(), "rows reset, audit entry written");
    let steps = StepTimes { backup: backup_time.as_secs_f64(), reset: reset_time.as_secs_f64(), publish: 0.0 };
    Ok(Prepared { run, steps })
}

/// The one transaction, returned uncommitted: the domain checked again, the
/// audit entry, the run record, the ledger resets (each at its planned
/// version) with their history, the workflow's domain resets and trigger
/// events.
async fn reset<'p>(
    pool: &'p PgPool,
    plan: &SealedPlan,
    request: &Request,
    backup_path: &str,
) -> Result<Reset<'p>, ApplyError> {
    let header = &plan.header;
    let mut tx = pool.begin().await.map_err(failed("starting the reset"))?;
    checks::check_domain(&mut tx, plan).await?;
    let entry = AuditEntry {
        operator: request.operator.clone(),
        action: "replay.apply".into(),
        details: serde_json::json!({
            "plan_id": header.plan_id,
            "plan_digest": plan.digest,
            "plan_path": plan.path,
            "reason": header.reason,
            "planned_by": header.created_by,
            "backup_path": backup_path,
            "rows": plan.summary.rows,
            "by_type": plan.summary.by_type,
            "by_status": plan.summary.by_status,
            "workflow": header.workflow.as_ref().map(|w| serde_json::json!({"name": w.name, "params": w.params, "domain_rows": w.domain_rows})),
            "triggers": plan.triggers().len(),
            "force": header.force,
            "rate": request.rate,
        }),
    };
    let record = audit::append(&mut tx, &entry).await?;
    let new_run = NewRun {
        plan_id: header.plan_id,
        digest: &plan.digest,
        operator: &request.operator,
        backup_path,
        audit_id: record.id,
        events: plan.events() as i64,
    };
    runs::start(&mut tx, &new_run).await?;
    let fallback = fallback_time(plan.events(), request.rate);
    for chunk in plan.rows(RESET_CHUNK)? {
        let rows: Vec<RowVersion> = chunk?.into_iter().map(|r| RowVersion { id: r.id, version: r.version }).collect();
        let reset =
            ledger::reset_for_plan(&mut tx, &rows, header.plan_id.as_uuid(), &request.operator, fallback, header.force)
                .await?;
        if reset < rows.len() as u64 {
            // A row changed between the check and now: roll back, and name it.
            drop(tx);
            let mut conn = pool.acquire().await.map_err(failed("checking the planned rows"))?;
            checks::check_current(&mut conn, plan).await?;
            let count = rows.len() - reset as usize;
            return Err(Refusal::Stale { count, total: plan.summary.rows, examples: vec![] }.into());
        }
    }
    if let Some(planned) = &header.workflow {
        workflows::find(&planned.name)?.reset(&mut tx, &planned.params).await?;
        let events = planned
            .triggers
            .iter()
            .map(|t| Event::new(t.event_id.clone(), t.event_type.clone(), t.occurred_at, t.payload.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApplyError::Workflow(WorkflowError::Usage(e.to_string())))?;
        ledger::insert_triggers(&mut tx, &events, header.plan_id.as_uuid(), &request.operator, fallback).await?;
    }
    let run = ReplayRun {
        plan_id: header.plan_id,
        digest: plan.digest.clone(),
        operator: request.operator.clone(),
        backup_path: backup_path.to_string(),
        audit_id: record.id,
        events: plan.events() as i64,
        published: 0,
        state: RunState::Publishing,
        started_at: Utc::now(),
        finished_at: None,
    };
    Ok(Reset { tx, run })
}

/// When claimers may take a reset row whose replayed message never came: the
/// republish's expected end (at `rate`, or at a conservative 1,000 events/s)
/// plus [`FALLBACK_GRACE`].
fn fallback_time(events: usize, rate: Option<u32>) -> DateTime<Utc> {
    let seconds = events as f64 / f64::from(rate.unwrap_or(1_000));
    let publish = chrono::Duration::milliseconds((seconds * 1000.0) as i64);
    Utc::now() + publish + chrono::Duration::from_std(FALLBACK_GRACE).unwrap_or_default()
}
