//! `replay rehearse PLAN`: a plan run for real, but on a copy. A fresh dump
//! of production is restored into a scratch database on the same server
//! (`replay_rehearsal_<hex>`), the plan's rows are reset there as
//! `replay apply` resets them and applied by the worker's own pipeline and
//! handlers, claimed as a claimer claims due rows; every domain table is
//! compared before and after, and the ledger's outcome of the plan's rows
//! reported (`compare`, `report`).
//!
//! Invariants:
//! - Production is only read: its row versions and a `pg_dump`. No message
//!   is published (no broker is opened) and no row is written there.
//! - The handlers run sandboxed (`Registry::sandboxed`): one with an effect
//!   outside the database records what it would have done (the payment
//!   provider is not called, not even the scratch copy of its table).
//! - The scratch database is dropped when the rehearsal ends, on an error
//!   too, unless the operator asked to keep it; the dump file is removed.
//!   It is made on production's server, or on another (`--rehearsal-url`).
//! - The report is kept beside the plan (`plan::rehearsal`), with the
//!   fingerprint of production's data taken just before the snapshot, so
//!   `replay apply` can tell whether the data it applies to is still the
//!   data rehearsed. A change during the snapshot makes the rehearsal look
//!   outdated, never current.
//! - A plan row changed in production since planning is left alone, as
//!   `replay apply` leaves it: rows are reset in the scratch database at
//!   their restored versions only if production still had the planned one.

mod compare;
mod report;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::PgPool;

pub use compare::{Change, ChangedRow, Sum, TableChange};
pub use report::{human, json, summary};

use crate::config::SecretUrl;
use crate::handlers::{EffectLog, Registry, Unsandboxed, WouldDo, DOMAIN_TABLES};
use crate::replay::apply::{self, ApplyError};
use crate::replay::plan::rehearsal::{self as record, DataFingerprint, RecordError, RehearsalRecord};
use crate::replay::plan::Destination;
use crate::replay::plan::{PlanError, SealedPlan};
use crate::store::backup::{self, BackupError};
use crate::store::database;
use crate::store::ledger::{self, OutcomeGroup, RowVersion};
use crate::store::scratch::{Scratch, ScratchError};
use crate::store::{failed, snapshot, StoreError};
use crate::worker::pipeline::{BatchError, Pipeline, Tally};
use crate::worker::WorkerConfig;

/// Who claims the rehearsal's rows in its ledger.
const WORKER: &str = "replay rehearse";
/// Rows reset, and rows claimed, per transaction.
const ROWS_PER_BATCH: usize = 500;
/// A claim's lease: nothing else claims in a scratch database.
const LEASE: Duration = Duration::from_secs(300);

/// How to rehearse.
#[derive(Debug, Clone)]
pub struct Request {
    pub operator: String,
    /// Keep the scratch database for inspection (`--keep`).
    pub keep: bool,
    /// Where the dump is written while it is restored (removed after).
    pub dump_dir: PathBuf,
    /// The server the scratch database is made on (`--rehearsal-url`, a
    /// database there to connect to); production's own when `None`.
    pub server: Option<SecretUrl>,
}

#[derive(Debug, thiserror::Error)]
pub enum RehearsalError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the snapshot of production could not be taken or restored: {0}")]
    Backup(#[from] BackupError),
    #[error("the scratch database could not be made or dropped: {0}")]
    Scratch(#[from] ScratchError),
    #[error("the plan could not be reset in the scratch database: {0}")]
    Reset(#[from] ApplyError),
    #[error("production's data could not be fingerprinted: {0}")]
    Fingerprint(ApplyError),
    #[error("the rehearsal ran, but its report could not be kept beside the plan: {0}")]
    Record(#[from] RecordError),
    #[error("the plan sends its events to queue {0}, not to our workers: it changes nothing in this database, so there is nothing to rehearse (apply it; its backup is not needed either)")]
    Destination(String),
    #[error("the worker's pipeline failed in the scratch database: {0}")]
    Pipeline(#[from] BatchError),
    #[error("{0}: it cannot be rehearsed")]
    Unsandboxed(#[from] Unsandboxed),
    #[error(
        "the plan was made for {planned}, but DATABASE_URL is {this}: rehearse it against the database it was made for"
    )]
    OtherDatabase { planned: String, this: String },
}

/// What a rehearsal found.
#[derive(Debug, Clone)]
pub struct Rehearsal {
    pub plan_id: crate::replay::plan::PlanId,
    pub plan_digest: String,
    /// The scratch database, and whether it was kept.
    pub database: String,
    pub kept: bool,
    /// Per domain table, in `DOMAIN_TABLES` order.
    pub tables: Vec<TableChange>,
    pub ledger: LedgerOutcome,
    /// What sandboxed handlers would have done outside the database, for
    /// events that ended processed.
    pub external_effects: Vec<WouldDo>,
    pub seconds: f64,
    pub steps: Steps,
    /// Production's data as rehearsed.
    pub data: DataFingerprint,
    /// Where the report is kept, beside the plan.
    pub report_path: PathBuf,
}

/// How long each step of a rehearsal took, in seconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Steps {
    /// Production's row versions read and its data fingerprinted.
    pub checks: f64,
    pub dump: f64,
    /// The scratch database created and migrated.
    pub scratch: f64,
    pub restore: f64,
    pub reset: f64,
    /// The plan's rows through the worker's pipeline.
    pub apply: f64,
    /// Both snapshots and the comparison.
    pub compare: f64,
}

/// Seconds since `*mark`, which moves to now.
fn lap(mark: &mut Instant) -> f64 {
    let seconds = mark.elapsed().as_secs_f64();
    *mark = Instant::now();
    seconds
}

/// The ledger's outcome of the plan's rows in the scratch database.
#[derive(Debug, Clone, Default)]
pub struct LedgerOutcome {
    /// Plan rows reset (and trigger events added) in the scratch database.
    pub reset: u64,
    /// Plan rows changed in production since planning, left alone.
    pub stale: u64,
    /// The plan's rows by status and error once nothing more was due.
    pub groups: Vec<OutcomeGroup>,
    /// What the pipeline did, over every batch.
    pub batches: u64,
    pub tally: Tally,
    /// The batch bound was reached with rows still due.
    pub bounded: bool,
}

/// Rehearses `plan` against the database at `url` (`pool`), with
/// `registry`'s handlers sandboxed.
pub async fn rehearse(
    pool: &PgPool,
    url: &SecretUrl,
    plan: &SealedPlan,
    registry: &Registry,
    request: &Request,
) -> Result<Rehearsal, RehearsalError> {
    let started = Instant::now();
    let (mut steps, mut mark) = (Steps::default(), Instant::now());
    if let Some(Destination::Queue(queue)) = &plan.header.destination {
        return Err(RehearsalError::Destination(queue.clone()));
    }
    let effects = EffectLog::default();
    let registry = registry.sandboxed(&effects)?;
    check_database(pool, plan).await?;
    let stale = stale_rows(pool, plan).await?;
    let data = apply::data_fingerprint(pool, plan).await.map_err(RehearsalError::Fingerprint)?;
    steps.checks = lap(&mut mark);
    let server = request.server.as_ref().unwrap_or(url);
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let dump = request.dump_dir.join(format!("replay-rehearsal-{suffix}.dump"));
    let taken = backup::take_at(url, dump.clone()).await;
    steps.dump = lap(&mut mark);
    let scratch = match taken {
        Ok(_) => Scratch::create(server, &format!("replay_rehearsal_{suffix}")).await,
        Err(error) => return Err(error.into()),
    };
    steps.scratch = lap(&mut mark);
    let scratch = match scratch {
        Ok(scratch) => scratch,
        Err(error) => {
            let _ = std::fs::remove_file(&dump);
            return Err(error.into());
        }
    };
    let outcome = match in_scratch(&scratch, &dump, plan, &registry, &stale, request, &mut steps).await {
        Ok((tables, ledger)) => {
            processed_effects(&scratch.pool, &effects).await.map(|effects| (tables, ledger, effects))
        }
        Err(error) => Err(error),
    };
    let _ = std::fs::remove_file(&dump);
    if request.keep {
        scratch.pool.close().await;
    } else {
        let dropped = scratch.drop_database(server).await;
        if let (Ok(_), Err(error)) = (&outcome, dropped) {
            return Err(error.into());
        }
    }
    let (tables, ledger, external_effects) = outcome?;
    let mut rehearsal = Rehearsal {
        plan_id: plan.header.plan_id,
        plan_digest: plan.digest.clone(),
        database: scratch.name.clone(),
        kept: request.keep,
        tables,
        ledger,
        external_effects,
        seconds: started.elapsed().as_secs_f64(),
        steps,
        data,
        report_path: record::path_for(&plan.path),
    };
    rehearsal.report_path = record::write(
        plan,
        &RehearsalRecord {
            plan_id: plan.header.plan_id,
            plan_digest: plan.digest.clone(),
            rehearsed_at: Utc::now(),
            operator: request.operator.clone(),
            data: rehearsal.data.clone(),
            summary: report::summary(&rehearsal),
            report: report::json(&rehearsal),
        },
    )?;
    Ok(rehearsal)
}

/// The rehearsal proper, in the scratch database: restore, snapshot, reset,
/// apply, snapshot, compare (the sandboxed effects are read after it).
async fn in_scratch(
    scratch: &Scratch,
    dump: &Path,
    plan: &SealedPlan,
    registry: &Registry,
    stale: &HashSet<i64>,
    request: &Request,
    steps: &mut Steps,
) -> Result<(Vec<TableChange>, LedgerOutcome), RehearsalError> {
    let mut mark = Instant::now();
    backup::restore(&scratch.url, dump).await?;
    steps.restore = lap(&mut mark);
    let before = snapshot::take(&scratch.pool, &DOMAIN_TABLES).await?;
    let mut compare_seconds = lap(&mut mark);
    let reset = reset(&scratch.pool, plan, stale, &request.operator).await?;
    steps.reset = lap(&mut mark);
    let mut ledger = apply_due(&scratch.pool, registry).await?;
    steps.apply = lap(&mut mark);
    ledger.reset = reset;
    ledger.stale = stale.len() as u64;
    ledger.groups = ledger::plan_outcome(&scratch.pool, plan.header.plan_id.as_uuid()).await?;
    let after = snapshot::take(&scratch.pool, &DOMAIN_TABLES).await?;
    let tables = before.iter().zip(&after).map(|(b, a)| compare::table(b, a)).collect();
    compare_seconds += lap(&mut mark);
    steps.compare = compare_seconds;
    Ok((tables, ledger))
}

/// Refuses a plan made for another database than the one rehearsed from.
async fn check_database(pool: &PgPool, plan: &SealedPlan) -> Result<(), RehearsalError> {
    let this = database::identity(pool).await?;
    let planned = &plan.header.database;
    let same_cluster = match (&planned.system_identifier, &this.system_identifier) {
        (Some(p), Some(t)) => p == t,
        _ => true,
    };
    if planned.database == this.database && same_cluster {
        Ok(())
    } else {
        Err(RehearsalError::OtherDatabase { planned: planned.to_string(), this: this.to_string() })
    }
}

/// The plan's rows whose production version is no longer the planned one
/// (or that are gone): `replay apply` would leave them alone.
async fn stale_rows(pool: &PgPool, plan: &SealedPlan) -> Result<HashSet<i64>, RehearsalError> {
    let mut stale = HashSet::new();
    let mut conn = pool.acquire().await.map_err(failed("read the plan's row versions"))?;
    for chunk in plan.rows(ROWS_PER_BATCH)? {
        let chunk = chunk?;
        let ids: Vec<i64> = chunk.iter().map(|r| r.id).collect();
        let now: std::collections::HashMap<i64, String> =
            ledger::versions(&mut conn, &ids).await?.into_iter().map(|v| (v.id, v.version)).collect();
        stale.extend(chunk.iter().filter(|r| now.get(&r.id) != Some(&r.version)).map(|r| r.id));
    }
    Ok(stale)
}

/// Resets the plan in the scratch database as `replay apply` does (the
/// workflow's domain reset and trigger events, the rows with their history
/// entries), everything due now instead of parked for a republish, in one
/// transaction. A restored row has a new version, so each is reset at the
/// version read here. Returns the rows reset and triggers added.
async fn reset(pool: &PgPool, plan: &SealedPlan, stale: &HashSet<i64>, operator: &str) -> Result<u64, RehearsalError> {
    let plan_id = plan.header.plan_id.as_uuid();
    let mut tx = pool.begin().await.map_err(failed("reset the plan in the scratch database"))?;
    apply::reset_workflow(&mut tx, plan, operator, Utc::now()).await?;
    let mut reset = plan.triggers().len() as u64;
    for chunk in plan.rows(ROWS_PER_BATCH)? {
        let ids: Vec<i64> = chunk?.iter().map(|r| r.id).filter(|id| !stale.contains(id)).collect();
        let rows: Vec<RowVersion> = ledger::versions(&mut tx, &ids).await?;
        reset += ledger::reset_for_plan(&mut tx, &rows, plan_id, operator, Utc::now(), plan.header.force).await?;
    }
    tx.commit().await.map_err(failed("reset the plan in the scratch database"))?;
    Ok(reset)
}

/// Claims the due rows and runs them through the worker's pipeline, as the
/// claimer does, until none is due (a retry's backoff makes a row due
/// later: it is reported as retrying) or the batch bound is reached.
async fn apply_due(pool: &PgPool, registry: &Registry) -> Result<LedgerOutcome, RehearsalError> {
    let config = WorkerConfig::new(WORKER.to_string());
    ledger::fold_partitions(pool).await?;
    let pipeline = Pipeline::new(registry.clone(), WORKER.to_string(), config.retry, config.batch_timeout, 500);
    let due: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE status = 'pending'")
        .fetch_one(pool)
        .await
        .map_err(failed("count the scratch ledger's pending rows"))?;
    // Every due row once, and as many again for rows released from behind
    // another (held behind it) and for redone batches.
    let bound = 2 * (due as u64 / ROWS_PER_BATCH as u64 + 1) + 20;
    let mut outcome = LedgerOutcome::default();
    let mut conn = pool.acquire().await.map_err(failed("claim due rows"))?;
    loop {
        let claimed = ledger::claim_due(&mut conn, WORKER, 0, ROWS_PER_BATCH as i64, LEASE).await?;
        if claimed.is_empty() {
            break;
        }
        if outcome.batches >= bound {
            outcome.bounded = true;
            break;
        }
        let tally = pipeline.process_claimed(&mut conn, claimed).await?;
        outcome.batches += 1;
        add(&mut outcome.tally, &tally);
    }
    Ok(outcome)
}

fn add(total: &mut Tally, batch: &Tally) {
    total.processed += batch.processed;
    total.duplicates += batch.duplicates;
    total.retrying += batch.retrying;
    total.held += batch.held;
    total.held_behind += batch.held_behind;
    total.failed += batch.failed;
    total.skipped += batch.skipped;
    total.dead_letters += batch.dead_letters;
}

/// The effects recorded for events that ended processed: an attempt rolled
/// back (a batch redone) recorded too.
async fn processed_effects(pool: &PgPool, effects: &EffectLog) -> Result<Vec<WouldDo>, RehearsalError> {
    let recorded = effects.entries();
    let ids: Vec<String> = recorded.iter().map(|e| e.event_id.clone()).collect();
    let processed: HashSet<String> = ledger::processed_among(pool, &ids).await?.into_iter().collect();
    Ok(recorded.into_iter().filter(|e| processed.contains(&e.event_id)).collect())
}
