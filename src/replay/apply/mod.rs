//! Applying a plan: every safety check first, then, in order, a checked
//! backup, one transaction that writes the audit entry and resets the rows
//! (and a workflow's domain rows), and the republish with publisher confirms,
//! paced and resumable.
//!
//! Architecture invariants:
//! - A refusal changes nothing: every check runs before the backup, and the
//!   row checks run again under lock inside the reset transaction.
//! - The audit entry, the run record and the resets commit together or not
//!   at all; a resumed apply never repeats them.
//! - A reset row stays parked for its plan: its republished message takes it
//!   at once, claimers only after the plan's fallback time, so `--rate`
//!   paces the replay and a row whose message is lost is still processed.
//! - Every event of the plan ends confirmed by RabbitMQ or kept in the
//!   outbox: a broker that fails mid-republish hands the rest to the relay.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Endpoints;
use crate::control::backup::{self, BackupError};
use crate::replay::plan::{DatabaseIdentity, PlanError, PlanId, SealedPlan};
use crate::replay::workflows::{self, WorkflowError};
use crate::store::audit::{self, AuditEntry};
use crate::store::ledger;
use crate::store::outbox;
use crate::store::pause::{self, Pause};
use crate::store::runs::{self, ControlLock, NewRun, ReplayRun, RunState};
use crate::store::{failed, StoreError};
use crate::wire::envelope::Event;
use crate::wire::publisher::Publisher;
use crate::wire::transport::{self, TransportError};

/// Rows checked and reset per statement.
const RESET_CHUNK: usize = 10_000;
/// Most events published between two progress records.
const MAX_BATCH: usize = 1_000;
/// Events read and kept per statement when the outbox takes over.
const HAND_OFF_BATCH: usize = 5_000;
/// Stale rows named in a refusal.
const STALE_EXAMPLES: usize = 10;
/// How long after its expected republish a reset row waits for its message
/// before claimers take it anyway.
const FALLBACK_GRACE: Duration = Duration::from_secs(600);

/// Where the pre-replay backup comes from.
#[derive(Debug, Clone)]
pub enum BackupSource {
    /// Take a fresh one into this directory.
    Fresh { dir: PathBuf },
    /// Use this dump if it is younger than `max_age` and readable.
    Existing { path: PathBuf, max_age: Duration },
}

/// How to apply.
#[derive(Debug, Clone)]
pub struct Request {
    pub operator: String,
    pub allow_external_effects: bool,
    pub backup: BackupSource,
    /// Events per second; unpaced when `None`.
    pub rate: Option<u32>,
}

/// A safety check said no. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Edited(PlanError),
    #[error(
        "the plan was made for {planned}, but this is {actual}: apply it where it was made, or make a new plan here"
    )]
    OtherDatabase { planned: DatabaseIdentity, actual: DatabaseIdentity },
    #[error("the plan is stale: {count} of its {total} rows changed since it was made (e.g. {}). Make a new plan with `replay plan`", examples.join(", "))]
    Stale { count: usize, total: usize, examples: Vec<String> },
    #[error("the plan is stale: the domain rows of workflow {workflow} changed since it was made. Make a new plan with `replay plan`")]
    DomainMoved { workflow: String },
    #[error("{0}")]
    Workflow(String),
    #[error("another `replay apply` or `replay emergency-stop` is running on this database: wait for it to finish (see `replay status`), then run this again")]
    Locked,
    #[error("workers are paused since {} by {} ({}): resume them with `replay resume --reason ...` first", .0.paused_at.to_rfc3339(), .0.operator, .0.reason)]
    Paused(Pause),
    #[error("the plan replays {} whose handlers have effects outside the database, which restoring a backup does not undo: pass --allow-external-effects if that is intended", .0.join(", "))]
    ExternalEffects(Vec<String>),
    #[error("this plan was stopped by an emergency stop and its backup restored: make a new plan with `replay plan`")]
    StoppedRun,
    #[error("the backup {path} is {age} old, older than --backup-max-age {max}: take a fresh one (omit --backup) or raise --backup-max-age")]
    BackupTooOld { path: PathBuf, age: String, max: String },
    #[error("the backup {path} cannot be used: {reason}. Omit --backup to take a fresh one")]
    BackupUnusable { path: PathBuf, reason: String },
}

/// Why an apply did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Not a `#[from]`: the refusal is the whole message, printed once.
    #[error("refused: {0}")]
    Refused(Refusal),
    #[error("stopped: workers were paused ({0}) after {published} of {total} events were published. The pause (or emergency stop) is in charge now", .pause.reason)]
    Paused { pause: Pause, published: u64, total: u64 },
    #[error("interrupted after {published} of {total} events were published and confirmed: run the same `replay apply` again to resume")]
    Interrupted { published: u64, total: u64 },
    #[error("RabbitMQ refused the republish after {published} of {total} events were confirmed ({cause}); nothing else was sent. Fix the cause, then run the same `replay apply` again to resume")]
    BrokerRefused { published: u64, total: u64, cause: String },
    #[error(transparent)]
    Plan(PlanError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("workflow: {0}")]
    Workflow(WorkflowError),
}

impl From<Refusal> for ApplyError {
    fn from(refusal: Refusal) -> Self {
        Self::Refused(refusal)
    }
}

impl From<PlanError> for ApplyError {
    fn from(error: PlanError) -> Self {
        match error {
            PlanError::Tampered { .. } => Self::Refused(Refusal::Edited(error)),
            other => Self::Plan(other),
        }
    }
}

impl From<WorkflowError> for ApplyError {
    fn from(error: WorkflowError) -> Self {
        match error {
            WorkflowError::Refused(reason) => Self::Refused(Refusal::Workflow(reason)),
            other => Self::Workflow(other),
        }
    }
}

/// A plan that passed every check, with the control lock held.
pub struct Checked {
    pub plan: SealedPlan,
    /// The run of an earlier apply of this plan, if any: resuming skips the
    /// backup, the audit entry and the reset.
    pub run: Option<ReplayRun>,
    /// The backup to use, if checked already (`--backup FILE`).
    existing_backup: Option<PathBuf>,
    _lock: ControlLock,
}

impl Checked {
    pub fn is_done(&self) -> bool {
        self.run.as_ref().is_some_and(|r| r.state == RunState::Done)
    }
}

/// Runs every check, changing nothing: the plan is intact, made for this
/// database, current (no planned row and no workflow domain row changed),
/// no other apply or stop runs, workers are not paused, external effects
/// are allowed, and a given backup is young and readable.
pub async fn check(pool: &PgPool, plan_path: &std::path::Path, request: &Request) -> Result<Checked, ApplyError> {
    let plan = SealedPlan::open(plan_path)?;
    let actual = crate::store::database::identity(pool).await.map_err(failed("reading the database's identity"))?;
    if plan.header.database != actual {
        return Err(Refusal::OtherDatabase { planned: plan.header.database.clone(), actual }.into());
    }
    if !plan.summary.external_effects.is_empty() && !request.allow_external_effects {
        return Err(Refusal::ExternalEffects(plan.summary.external_effects.clone()).into());
    }
    let lock = runs::try_lock(pool).await?.ok_or(Refusal::Locked)?;
    if let Some(pause) = pause::current(pool).await? {
        return Err(Refusal::Paused(pause).into());
    }
    let run = runs::find(pool, plan.header.plan_id).await?;
    if run.as_ref().is_some_and(|r| r.state == RunState::Stopped) {
        return Err(Refusal::StoppedRun.into());
    }
    if run.is_none() {
        let mut conn = pool.acquire().await.map_err(failed("checking the planned rows"))?;
        check_current(&mut conn, &plan).await?;
    }
    let existing_backup = match (&request.backup, &run) {
        (BackupSource::Existing { path, max_age }, None) => Some(check_backup(pool, path, *max_age).await?),
        _ => None,
    };
    Ok(Checked { plan, run, existing_backup, _lock: lock })
}

/// Refuses if any planned row or workflow domain row changed since planning.
async fn check_current(conn: &mut sqlx::PgConnection, plan: &SealedPlan) -> Result<(), ApplyError> {
    let mut changed = 0;
    let mut examples = Vec::new();
    for chunk in plan.rows(RESET_CHUNK)? {
        let chunk = chunk?;
        let ids: Vec<i64> = chunk.iter().map(|r| r.id).collect();
        let now: std::collections::HashMap<i64, String> = ledger::versions(conn, &ids).await?.into_iter().collect();
        for row in &chunk {
            if now.get(&row.id) != Some(&row.version) {
                changed += 1;
                if examples.len() < STALE_EXAMPLES {
                    let what = if now.contains_key(&row.id) { "changed" } else { "gone" };
                    examples.push(format!("{} ({}, {what})", row.event_id, row.event_type));
                }
            }
        }
    }
    if changed > 0 {
        return Err(Refusal::Stale { count: changed, total: plan.summary.rows, examples }.into());
    }
    if let Some(planned) = &plan.header.workflow {
        let workflow = workflows::find(&planned.name)?;
        let now = workflow.inspect(conn, &planned.params).await?;
        if now.fingerprint != planned.fingerprint {
            return Err(Refusal::DomainMoved { workflow: planned.name.clone() }.into());
        }
    }
    Ok(())
}

async fn check_backup(pool: &PgPool, path: &std::path::Path, max_age: Duration) -> Result<PathBuf, ApplyError> {
    let unusable = |reason: String| Refusal::BackupUnusable { path: path.to_path_buf(), reason };
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).map_err(|e| unusable(e.to_string()))?;
    let age = modified.elapsed().unwrap_or_default();
    if age > max_age {
        return Err(Refusal::BackupTooOld {
            path: path.to_path_buf(),
            age: humantime::format_duration(Duration::from_secs(age.as_secs())).to_string(),
            max: humantime::format_duration(max_age).to_string(),
        }
        .into());
    }
    backup::check(path).await.map_err(|e| unusable(e.to_string()))?;
    let version = crate::store::database::schema_version(pool).await.map_err(failed("reading the schema version"))?;
    backup::check_schema(path, version).await.map_err(|e| unusable(e.to_string()))?;
    Ok(path.to_path_buf())
}

/// Progress of the republish, for a bar or plain lines.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub published: u64,
    pub total: u64,
}

/// What an apply did.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub plan_id: PlanId,
    pub events: u64,
    /// Published by this invocation (less than `events` when resuming).
    pub published_now: u64,
    /// Kept in the outbox because RabbitMQ failed; the workers relay them.
    pub kept_in_outbox: u64,
    /// Why RabbitMQ did not take them (redacted).
    pub broker_error: Option<String>,
    pub resumed: bool,
    pub backup_path: String,
    pub audit_id: i64,
    pub seconds: f64,
    /// Time of each step in seconds: backup, reset (one transaction), publish.
    pub steps: StepTimes,
}

/// How long each step of an apply took, in seconds (0 for a step a resumed apply skips).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StepTimes {
    pub backup: f64,
    pub reset: f64,
    pub publish: f64,
}

/// Backs up, resets and republishes a checked plan.
pub async fn execute(
    pool: &PgPool,
    endpoints: &Endpoints,
    checked: Checked,
    request: &Request,
    shutdown: &CancellationToken,
    mut progress: impl FnMut(Progress),
) -> Result<Outcome, ApplyError> {
    let started = Instant::now();
    let plan = &checked.plan;
    let plan_id = plan.header.plan_id;
    let total = plan.events() as u64;
    let resumed = checked.run.is_some();
    // The broker connection opens while the backup and the reset run.
    let broker = async {
        let connection = transport::connect(&endpoints.amqp_url, &format!("replay apply {plan_id}")).await?;
        let channel = transport::channel(&connection).await?;
        transport::declare(&channel, &endpoints.exchange, &endpoints.queue).await?;
        let publisher = Publisher::new(channel, &endpoints.exchange).await?;
        Ok::<_, TransportError>((connection, publisher))
    };
    let prepared = async {
        match &checked.run {
            Some(run) => Ok((run.clone(), StepTimes::default())),
            None => back_up_and_reset(pool, endpoints, &checked, request).await,
        }
    };
    let (broker, prepared) = tokio::join!(broker, prepared);
    let (run, steps) = prepared?;
    let step = Instant::now();
    let already = u64::try_from(run.published).unwrap_or(0);
    progress(Progress { published: already, total });
    let (published, broker_failure) = match broker {
        Ok((connection, publisher)) => {
            let sent = republish(pool, plan, request, shutdown, &publisher, already, &mut progress).await?;
            if sent.1.is_none() {
                transport::close(&connection, "apply done").await;
            }
            sent
        }
        Err(error) => (already, Some(error)),
    };
    // RabbitMQ went away mid-way: what it did not confirm goes to the
    // outbox, which the workers relay once it is back (with the plan's
    // header). A refusal, an interrupt or a pause stops here instead,
    // resumable, with nothing handed off.
    let kept_in_outbox = match &broker_failure {
        Some(error) => {
            runs::advance(pool, plan_id, published as i64).await?;
            if shutdown.is_cancelled() {
                return Err(ApplyError::Interrupted { published, total });
            }
            if let Some(pause) = pause::current(pool).await? {
                return Err(ApplyError::Paused { pause, published, total });
            }
            if !error.is_outage() {
                return Err(ApplyError::BrokerRefused { published, total, cause: error.cause() });
            }
            tracing::warn!(error = %error, published, "RabbitMQ failed during the republish; keeping the rest in the outbox");
            hand_off(pool, plan, published, &error.cause()).await?
        }
        None => 0,
    };
    runs::advance(pool, plan_id, published as i64).await?;
    runs::finish(pool, plan_id).await?;
    Ok(Outcome {
        plan_id,
        events: total,
        published_now: published - already,
        kept_in_outbox,
        broker_error: broker_failure.map(|e| e.cause()),
        resumed,
        backup_path: run.backup_path,
        audit_id: run.audit_id,
        seconds: started.elapsed().as_secs_f64(),
        steps: StepTimes { publish: step.elapsed().as_secs_f64(), ..steps },
    })
}

/// Publishes the plan's events from `already` on, paced and confirmed.
/// Returns how many are confirmed in all, and the broker's failure if it
/// stopped confirming (the rest is then the outbox's).
async fn republish(
    pool: &PgPool,
    plan: &SealedPlan,
    request: &Request,
    shutdown: &CancellationToken,
    publisher: &Publisher,
    already: u64,
    progress: &mut impl FnMut(Progress),
) -> Result<(u64, Option<TransportError>), ApplyError> {
    let plan_id = plan.header.plan_id;
    let total = plan.events() as u64;
    // Paced: four batches a second, so the rate holds within a quarter second.
    let batch = request.rate.map_or(MAX_BATCH, |r| (r as usize / 4).clamp(1, MAX_BATCH));
    let mut published = already;
    let paced_from = Instant::now();
    let mut batches = EventIds::new(plan, batch)?;
    batches.skip_events(already)?;
    // While the broker confirms one batch, the next is released and read.
    let mut ready = match batches.next_batch()? {
        Some(ids) => Some(prepare(pool, ids, plan_id).await?),
        None => None,
    };
    // Each round publishes one batch while it reads the next and records
    // the progress of the one before.
    let record = |published: u64| async move { runs::advance(pool, plan_id, published as i64).await };
    while let Some((ids, events)) = ready.take() {
        if shutdown.is_cancelled() {
            record(published).await?;
            return Err(ApplyError::Interrupted { published, total });
        }
        if let Some(pause) = pause::current(pool).await? {
            record(published).await?;
            return Err(ApplyError::Paused { pause, published, total });
        }
        let following = batches.next_batch()?;
        let (sent, next, recorded) = tokio::join!(
            publisher.publish_all(&events, |_| {}),
            async {
                match following {
                    Some(ids) => prepare(pool, ids, plan_id).await.map(Some),
                    None => Ok(None),
                }
            },
            record(published)
        );
        recorded?;
        if let Err(failure) = sent {
            return Ok((published, Some(failure)));
        }
        published += ids.len() as u64;
        progress(Progress { published, total });
        ready = next?;
        if let Some(rate) = request.rate {
            let due = paced_from + Duration::from_secs_f64((published - already) as f64 / f64::from(rate));
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }
    Ok((published, None))
}

/// Keeps the plan's events from `from` on in the outbox, with the plan's
/// label, and returns how many: the workers' relay publishes them.
async fn hand_off(pool: &PgPool, plan: &SealedPlan, from: u64, reason: &str) -> Result<u64, ApplyError> {
    let mut batches = EventIds::new(plan, HAND_OFF_BATCH)?;
    batches.skip_events(from)?;
    let mut kept = 0;
    while let Some(ids) = batches.next_batch()? {
        let (_, events) = prepare(pool, ids, plan.header.plan_id).await?;
        outbox::keep(pool, &events, reason).await?;
        kept += events.len() as u64;
    }
    Ok(kept)
}

/// Reads a batch's events to publish, labelled with their plan.
async fn prepare(pool: &PgPool, ids: Vec<String>, plan: PlanId) -> Result<(Vec<String>, Vec<Event>), ApplyError> {
    let events = ledger::events(pool, &ids).await?;
    let labelled = events.into_iter().map(|e| Event { replay_plan: Some(plan), ..e }).collect();
    Ok((ids, labelled))
}

/// Takes the backup and resets the rows at the same time, safely: the dump
/// reads a snapshot exported before the reset began, so it holds the
/// pre-replay state, and the reset commits only once the dump is checked.
/// A failed backup rolls the reset back.
async fn back_up_and_reset(
    pool: &PgPool,
    endpoints: &Endpoints,
    checked: &Checked,
    request: &Request,
) -> Result<(ReplayRun, StepTimes), ApplyError> {
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
    let ((tx, run), reset_time) = reset?;
    tx.commit().await.map_err(failed("committing the reset"))?;
    tracing::info!(rows = plan.summary.rows, seconds = reset_time.as_secs_f64(), "rows reset, audit entry written");
    Ok((run, StepTimes { backup: backup_time.as_secs_f64(), reset: reset_time.as_secs_f64(), publish: 0.0 }))
}

/// The one transaction, returned uncommitted: rows checked again under lock,
/// the audit entry, the run record, the ledger resets with their history, the
/// workflow's trigger events and domain resets.
async fn reset<'p>(
    pool: &'p PgPool,
    plan: &SealedPlan,
    request: &Request,
    backup_path: &str,
) -> Result<(sqlx::Transaction<'p, sqlx::Postgres>, ReplayRun), ApplyError> {
    let header = &plan.header;
    let mut tx = pool.begin().await.map_err(failed("starting the reset"))?;
    if let Some(planned) = &header.workflow {
        let now = workflows::find(&planned.name)?.inspect(&mut tx, &planned.params).await?;
        if now.fingerprint != planned.fingerprint {
            return Err(Refusal::DomainMoved { workflow: planned.name.clone() }.into());
        }
    }
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
        let rows: Vec<(i64, String)> = chunk?.into_iter().map(|r| (r.id, r.version)).collect();
        let reset =
            ledger::reset_for_plan(&mut tx, &rows, header.plan_id.as_uuid(), &request.operator, fallback, header.force)
                .await?;
        if reset < rows.len() as u64 {
            // A row changed between the check and now: roll back, and name it.
            drop(tx);
            let mut conn = pool.acquire().await.map_err(failed("checking the planned rows"))?;
            check_current(&mut conn, plan).await?;
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
    Ok((tx, run))
}

/// When claimers may take a reset row whose replayed message never came: the
/// republish's expected end (at `rate`, or at a conservative 1,000 events/s)
/// plus [`FALLBACK_GRACE`].
fn fallback_time(events: usize, rate: Option<u32>) -> chrono::DateTime<Utc> {
    let seconds = events as f64 / f64::from(rate.unwrap_or(1_000));
    let publish = chrono::Duration::milliseconds((seconds * 1000.0) as i64);
    Utc::now() + publish + chrono::Duration::from_std(FALLBACK_GRACE).unwrap_or_default()
}

/// The event ids to publish, in plan order: the rows, then the triggers.
struct EventIds<'a> {
    plan: &'a SealedPlan,
    rows: crate::replay::plan::RowChunks,
    buffered: std::collections::VecDeque<String>,
    triggers_from: Option<usize>,
    batch: usize,
}

impl<'a> EventIds<'a> {
    fn new(plan: &'a SealedPlan, batch: usize) -> Result<Self, PlanError> {
        Ok(Self { plan, rows: plan.rows(batch)?, buffered: Default::default(), triggers_from: None, batch })
    }

    fn next_id(&mut self) -> Result<Option<String>, PlanError> {
        loop {
            if let Some(id) = self.buffered.pop_front() {
                return Ok(Some(id));
            }
            match self.triggers_from {
                Some(n) => {
                    self.triggers_from = Some(n + 1);
                    return Ok(self.plan.triggers().get(n).map(|t| t.event_id.clone()));
                }
                None => match self.rows.next() {
                    Some(chunk) => self.buffered.extend(chunk?.into_iter().map(|r| r.event_id)),
                    None => self.triggers_from = Some(0),
                },
            }
        }
    }

    fn skip_events(&mut self, n: u64) -> Result<(), PlanError> {
        for _ in 0..n {
            if self.next_id()?.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn next_batch(&mut self) -> Result<Option<Vec<String>>, PlanError> {
        let mut ids = Vec::with_capacity(self.batch);
        while ids.len() < self.batch {
            match self.next_id()? {
                Some(id) => ids.push(id),
                None => break,
            }
        }
        Ok((!ids.is_empty()).then_some(ids))
    }
}
