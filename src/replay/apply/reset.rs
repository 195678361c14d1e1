//! The pre-replay backup, the short transaction that records the apply, and
//! the reset of the plan's rows in chunks.
//!
//! Invariants:
//! - Nothing is changed before the pre-replay dump is taken and checked. A
//!   pause or an interrupt seen while `pg_dump` runs stops it (the dump is
//!   killed and its file removed), with nothing changed.
//! - The audit entry and the run record commit together in one short
//!   transaction, with a workflow's domain reset and trigger events, after
//!   the domain is checked again (a change since [`super::check`] rolls it
//!   back as a refusal). The audit chain's lock is taken by its last two
//!   statements, so no control action (pause, resume, emergency stop, each
//!   audited) waits behind the reset. A resumed apply finds the run record
//!   and never comes here again.
//! - Each chunk of rows is reset in its own transaction together with the
//!   run's progress (`reset_rows`), so a re-run resumes right after the last
//!   committed chunk and the reset never resets a row twice (a resumed
//!   canary apply resets again only the plan's rows that failed for good,
//!   in `canary`, each with its own history entry). A row is reset only at the
//!   version it was planned at, checked by the reset statement under its row
//!   lock: one changed since the check is left alone and counted
//!   (`stale_rows`). Its republished message then finds no row parked for
//!   the plan (`ledger::take_due`): a duplicate the worker acks, or the
//!   delivery of a row that was due anyway.
//! - Between two chunks a pause or an interrupt stops the reset, resumable;
//!   the republish, which never passes the rows reset so far, stops too.
//! - A reset row stays parked for its plan: its republished message takes it
//!   at once, claimers only after the plan's fallback time, so `--rate`
//!   paces the replay and a row whose message is lost is still processed.
//!   A canary's halt stops the reset at its next chunk (`mod.rs` cancels
//!   the token it is given) and puts the fallback of the rows parked so far
//!   off until the same apply runs again, which restores it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::checks::{self, Checked};
use super::{stop_here, ApplyError, BackupSource, Progress, Request};
use crate::config::Endpoints;
use crate::replay::plan::SealedPlan;
use crate::replay::workflows::{self, WorkflowError};
use crate::store::audit::{self, AuditEntry};
use crate::store::backup;
use crate::store::failed;
use crate::store::ledger::{self, RowVersion};
use crate::store::runs::{self, NewRun, ReplayRun, RunState};
use crate::wire::envelope::Event;

/// Rows reset per transaction: small enough that a pause is seen within a
/// few tens of milliseconds and a worker waits on no lock for longer (at
/// about 30 µs a row alone, twice that beside the republish on two cores).
const ROWS_PER_CHUNK: usize = 500;
/// Rows reset before the ledger's statistics are first refreshed, and
/// between two refreshes after that (see `ledger::refresh_statistics`).
const ANALYZE_FIRST: u64 = 20_000;
const ANALYZE_EVERY: u64 = 200_000;
/// Rows reset between two merges of the payload index's pending list, so no
/// chunk merges it while it holds its rows (`ledger::merge_payload_index`).
const MERGE_EVERY: u64 = 30_000;
/// How often the backup's progress is shown and a pause looked for.
const BACKUP_TICK: Duration = Duration::from_millis(250);
/// How long after its expected republish a reset row waits for its message
/// before claimers take it anyway.
const FALLBACK_GRACE: Duration = Duration::from_secs(600);

/// The apply recorded: its run, and how long the backup took.
pub(super) struct Begun {
    pub run: ReplayRun,
    pub backup_seconds: f64,
}

/// Takes (or checks) the pre-replay backup, then records the apply in one
/// short transaction: the domain checked again, a workflow's domain reset
/// and trigger events, the audit entry and the run record.
pub(super) async fn begin(
    pool: &PgPool,
    endpoints: &Endpoints,
    checked: &Checked,
    request: &Request,
    shutdown: &CancellationToken,
    progress: &impl Fn(Progress),
) -> Result<Begun, ApplyError> {
    let started = Instant::now();
    let plan = &checked.plan;
    let backup_path = match (&checked.existing_backup, &request.backup) {
        (Some(path), _) | (None, BackupSource::Existing { path, .. }) => path.clone(),
        (None, BackupSource::Fresh { dir }) => back_up(pool, endpoints, dir, shutdown, progress).await?,
    };
    let backup_seconds = started.elapsed().as_secs_f64();
    if let Some(stop) = stop_here(pool, shutdown, None).await? {
        return Err(stop);
    }
    let run = record(pool, plan, request, &backup_path.display().to_string()).await?;
    tracing::info!(plan = %plan.header.plan_id, audit = run.audit_id, "apply recorded; resetting");
    Ok(Begun { run, backup_seconds })
}

/// Takes a checked dump into `dir`, showing its size as it grows; stops
/// (killing `pg_dump`, removing its file) if the workers are paused or the
/// apply is interrupted meanwhile.
async fn back_up(
    pool: &PgPool,
    endpoints: &Endpoints,
    dir: &Path,
    shutdown: &CancellationToken,
    progress: &impl Fn(Progress),
) -> Result<PathBuf, ApplyError> {
    let path = backup::path_in(dir);
    let started = Instant::now();
    let mut dump = Box::pin(backup::take_at(&endpoints.database_url, path.clone()));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + BACKUP_TICK, BACKUP_TICK);
    loop {
        tokio::select! {
            taken = &mut dump => {
                let taken = taken?;
                tracing::info!(path = %taken.path.display(), bytes = taken.bytes, seconds = started.elapsed().as_secs_f64(), "backup checked");
                return Ok(taken.path);
            }
            _ = tick.tick() => {
                if let Some(stop) = stop_here(pool, shutdown, None).await? {
                    // Dropping the dump kills pg_dump; what it wrote is no backup.
                    drop(dump);
                    let _ = std::fs::remove_file(&path);
                    return Err(stop);
                }
                let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
                progress(Progress::Backup { bytes, seconds: started.elapsed().as_secs_f64() });
            }
        }
    }
}

/// The short transaction: the domain checked again, a workflow's domain
/// reset and trigger events, then the audit entry and the run record, last,
/// so the audit chain's lock is held only until the commit right after.
pub(super) async fn record(
    pool: &PgPool,
    plan: &SealedPlan,
    request: &Request,
    backup_path: &str,
) -> Result<ReplayRun, ApplyError> {
    let header = &plan.header;
    let mut tx = pool.begin().await.map_err(failed("recording the apply"))?;
    checks::check_domain(&mut tx, plan).await?;
    reset_workflow(&mut tx, plan, &request.operator, fallback_time(plan.events(), request.rate)).await?;
    let mut entry = AuditEntry {
        operator: request.operator.clone(),
        action: "replay.apply".into(),
        details: serde_json::json!({
            "plan_id": header.plan_id,
            "plan_digest": plan.digest,
            "plan_path": plan.path,
            "reason": header.reason,
            "planned_by": header.created_by,
            "backup_path": (!backup_path.is_empty()).then_some(backup_path),
            "rows": plan.summary.rows,
            "by_type": plan.summary.by_type,
            "by_status": plan.summary.by_status,
            "workflow": header.workflow.as_ref().map(|w| serde_json::json!({"name": w.name, "params": w.params, "domain_rows": w.domain_rows})),
            "triggers": plan.triggers().len(),
            "force": header.force,
            "rate": request.rate,
        }),
    };
    // A destination replay takes no backup (`backup_path` is empty): it
    // says where its events went instead.
    let destination = header.destination.as_ref().map(ToString::to_string);
    if let (Some(destination), Some(details)) = (&destination, entry.details.as_object_mut()) {
        details.insert("destination".into(), destination.clone().into());
    }
    let record = audit::append(&mut tx, &entry).await?;
    let new_run = NewRun {
        plan_id: header.plan_id,
        digest: &plan.digest,
        operator: &request.operator,
        backup_path,
        audit_id: record.id,
        events: plan.events() as i64,
        destination: destination.as_deref(),
    };
    let run = runs::start(&mut tx, &new_run).await?;
    tx.commit().await.map_err(failed("recording the apply"))?;
    Ok(run)
}

/// A workflow plan's domain reset and its trigger events, added to the
/// ledger parked for the plan until `fallback`; nothing for a plan without
/// a workflow. Inside the caller's transaction: the apply's short one, or a
/// rehearsal's in its scratch database.
pub(crate) async fn reset_workflow(
    conn: &mut PgConnection,
    plan: &SealedPlan,
    operator: &str,
    fallback: DateTime<Utc>,
) -> Result<(), ApplyError> {
    let Some(planned) = &plan.header.workflow else { return Ok(()) };
    workflows::find(&planned.name)?.reset(&mut *conn, &planned.params).await?;
    let events = planned
        .triggers
        .iter()
        .map(|t| {
            let event = Event::new(t.event_id.clone(), t.event_type.clone(), t.occurred_at, t.payload.clone())?;
            // Keyed as a producer would key it, so the trigger reaches the
            // partition of the events it follows (a period's close, its period's).
            let partition_key = crate::handlers::partition_key(&event).ok().flatten();
            Ok(Event { partition_key, ..event })
        })
        .collect::<Result<Vec<_>, crate::wire::envelope::Rejection>>()
        .map_err(|e| ApplyError::Workflow(WorkflowError::Usage(e.to_string())))?;
    ledger::insert_triggers(conn, &events, plan.header.plan_id.as_uuid(), operator, fallback).await?;
    Ok(())
}

/// What the reset left alone, and how long its chunks held their rows.
pub(super) struct ResetDone {
    /// Rows that changed since the plan was checked (in all runs of this apply).
    pub stale: u64,
    /// Each chunk's transaction in this run, sorted: no worker waits on a
    /// reset row's lock for longer than the last.
    pub chunks: Vec<Duration>,
}

/// Resets the plan's rows from where `run` got to, a chunk per transaction,
/// publishing on `reset_through` how many rows (in plan order) are reset so
/// far; marks the run `publishing` once every row is. A run that is
/// `publishing` already has nothing to reset.
pub(super) async fn reset(
    pool: &PgPool,
    plan: &SealedPlan,
    run: &ReplayRun,
    request: &Request,
    shutdown: &CancellationToken,
    reset_through: &watch::Sender<u64>,
    progress: &impl Fn(Progress),
) -> Result<ResetDone, ApplyError> {
    let plan_id = plan.header.plan_id;
    let total = plan.summary.rows as u64;
    let mut stale = u64::try_from(run.stale_rows).unwrap_or(0);
    let mut chunks = Vec::new();
    if run.state != RunState::Resetting {
        return Ok(ResetDone { stale, chunks });
    }
    let fallback = fallback_time(plan.events().saturating_sub(run.events_published() as usize), request.rate);
    let mut reset = run.rows_reset(total);
    let mut read = 0;
    let mut next_analyze = reset + ANALYZE_FIRST;
    let mut next_merge = reset;
    for chunk in plan.rows(ROWS_PER_CHUNK)? {
        let chunk = chunk?;
        let from = read;
        read += chunk.len() as u64;
        if read <= reset {
            continue; // reset by an earlier run of this apply
        }
        if let Some(stop) = stop_here(pool, shutdown, None).await? {
            return Err(stop);
        }
        if reset >= next_merge {
            ledger::merge_payload_index(pool).await?;
            next_merge = reset + MERGE_EVERY;
        }
        let skip = usize::try_from(reset.saturating_sub(from)).unwrap_or(0);
        let rows: Vec<RowVersion> =
            chunk.into_iter().skip(skip).map(|r| RowVersion { id: r.id, version: r.version }).collect();
        let began = Instant::now();
        let mut tx = pool.begin().await.map_err(failed("resetting a chunk of rows"))?;
        let done =
            ledger::reset_for_plan(&mut tx, &rows, plan_id.as_uuid(), &request.operator, fallback, plan.header.force)
                .await?;
        reset += rows.len() as u64;
        stale += rows.len() as u64 - done;
        // Last, so the run's row is locked only until the commit.
        runs::record_reset(&mut tx, plan_id, reset as i64, stale as i64).await?;
        tx.commit().await.map_err(failed("resetting a chunk of rows"))?;
        chunks.push(began.elapsed());
        reset_through.send_replace(reset);
        progress(Progress::Reset { rows: reset, total });
        if reset >= next_analyze {
            ledger::refresh_statistics(pool).await?;
            next_analyze = reset + ANALYZE_EVERY;
        }
    }
    if total >= ANALYZE_FIRST {
        ledger::refresh_statistics(pool).await?;
    }
    runs::reset_done(pool, plan_id).await?;
    reset_through.send_replace(total);
    if stale > 0 {
        tracing::warn!(stale, "rows changed since the plan was checked were left alone, not reset");
    }
    chunks.sort_unstable();
    Ok(ResetDone { stale, chunks })
}

/// When claimers may take a reset row whose replayed message never came: the
/// republish's expected end (at `rate`, or at a conservative 1,000 events/s)
/// plus [`FALLBACK_GRACE`].
pub(super) fn fallback_time(events: usize, rate: Option<u32>) -> DateTime<Utc> {
    let seconds = events as f64 / f64::from(rate.unwrap_or(1_000));
    let publish = chrono::Duration::milliseconds((seconds * 1000.0) as i64);
    Utc::now() + publish + chrono::Duration::from_std(FALLBACK_GRACE).unwrap_or_default()
}
