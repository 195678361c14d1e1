//! The refusals: every check `replay apply` makes before it changes anything,
//! and the one (workflow domain) the apply's first transaction makes again.
//!
//! Invariant: a refusal changes nothing. [`check`] only reads (and takes the
//! control lock), and [`Checked`] exists only once every check passed, so
//! nothing is backed up or reset for a plan that was refused. The apply's
//! first transaction repeats [`check_domain`] and rolls back on a change. A
//! planned row that changes after [`check_current`] is no refusal: the
//! reset statement re-checks each row's version and leaves a changed one
//! alone, counted (`reset`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};

use super::{ApplyError, BackupSource, Refusal, Request, Target};
use crate::handlers::DOMAIN_TABLES;
use crate::replay::plan::rehearsal::{self, DataFingerprint, RehearsalRecord, TableFingerprint};
use crate::replay::plan::SealedPlan;
use crate::replay::workflows;
use crate::store::backup;
use crate::store::failed;
use crate::store::ledger;
use crate::store::pause;
use crate::store::runs::{self, ControlLock, ReplayRun, RunState};
use crate::store::snapshot;

/// Planned rows whose versions are read per statement.
const CHECK_CHUNK: usize = 10_000;
/// Stale rows named in a refusal.
const STALE_EXAMPLES: usize = 10;

/// A plan that passed every check, with the control lock held.
pub struct Checked {
    pub plan: SealedPlan,
    /// The run of an earlier apply of this plan, if any: resuming skips the
    /// backup, the audit entry and the reset.
    pub run: Option<ReplayRun>,
    /// The backup to use, if checked already (`--backup FILE`).
    pub(super) existing_backup: Option<PathBuf>,
    /// What the plan's rehearsal found, and whether it still holds.
    pub rehearsal: Rehearsed,
    _lock: ControlLock,
}

/// A plan's rehearsal, as the check found it.
#[derive(Debug, Clone)]
pub enum Rehearsed {
    /// No rehearsal is kept beside the plan.
    Missing,
    /// Rehearsed on the data as it is now.
    Current(Box<RehearsalRecord>),
    /// Rehearsed, but production changed since: these parts.
    Outdated(Box<RehearsalRecord>, Vec<String>),
    /// The file beside the plan is not a usable rehearsal (why).
    Unusable(String),
    /// Not looked at: a resumed apply (its data is already being reset) or a
    /// plan with a destination (it changes nothing here to rehearse).
    NotApplicable,
}

impl Rehearsed {
    /// What an operator reads of it before applying `plan`, a line each.
    pub fn describe(&self, plan: &Path) -> Vec<String> {
        let report = rehearsal::path_for(plan).display().to_string();
        let (head, record) = match self {
            Self::NotApplicable => return Vec::new(),
            Self::Missing => {
                return vec![format!(
                    "not rehearsed: `replay rehearse {}` shows on a copy what this plan would change",
                    plan.display()
                )]
            }
            Self::Unusable(reason) => return vec![format!("rehearsal unusable: {reason}")],
            Self::Current(record) => (
                format!(
                    "rehearsed {} by {} on the data as it is now ({report}):",
                    record.rehearsed_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    record.operator
                ),
                record,
            ),
            Self::Outdated(record, changed) => (
                format!(
                    "rehearsed {} by {}, but production changed since ({}): it may not hold, rehearse again with `replay rehearse {}` ({report}):",
                    record.rehearsed_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    record.operator,
                    changed.join(", "),
                    plan.display()
                ),
                record,
            ),
        };
        std::iter::once(head).chain(record.summary.iter().map(|l| format!("  {l}"))).collect()
    }
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
pub async fn check(pool: &PgPool, plan_path: &Path, request: &Request) -> Result<Checked, ApplyError> {
    let plan = SealedPlan::open(plan_path)?;
    let actual = crate::store::database::identity(pool).await?;
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
    let rehearsal = match (&run, Target::of(&plan)) {
        (None, Target::Workers) => check_rehearsal(pool, &plan, request.require_rehearsal).await?,
        _ => Rehearsed::NotApplicable,
    };
    let existing_backup = match (&request.backup, &run) {
        (BackupSource::Existing { path, max_age }, None) => Some(check_backup(pool, path, *max_age).await?),
        _ => None,
    };
    Ok(Checked { plan, run, existing_backup, rehearsal, _lock: lock })
}

/// The plan's rehearsal and whether it still holds, for showing (the
/// console's plan page); reads only.
pub async fn rehearsal_of(pool: &PgPool, plan: &SealedPlan) -> Result<Rehearsed, ApplyError> {
    match Target::of(plan) {
        Target::Workers => check_rehearsal(pool, plan, false).await,
        Target::Queue(_) => Ok(Rehearsed::NotApplicable),
    }
}

/// Finds the plan's rehearsal and compares the data it saw with the data
/// now; with `required`, anything but a current rehearsal is a refusal.
async fn check_rehearsal(pool: &PgPool, plan: &SealedPlan, required: bool) -> Result<Rehearsed, ApplyError> {
    let rehearsed = match rehearsal::open(plan) {
        Ok(None) => Rehearsed::Missing,
        Err(error) => Rehearsed::Unusable(error.to_string()),
        Ok(Some(record)) => {
            let changed = record.data.differences(&data_fingerprint(pool, plan).await?);
            if changed.is_empty() {
                Rehearsed::Current(Box::new(record))
            } else {
                Rehearsed::Outdated(Box::new(record), changed)
            }
        }
    };
    let path = rehearsal::path_for(&plan.path).display().to_string();
    match (&rehearsed, required) {
        (Rehearsed::Missing, true) => Err(Refusal::NotRehearsed { plan: plan.path.clone() }.into()),
        (Rehearsed::Unusable(reason), true) => Err(Refusal::RehearsalUnusable { reason: reason.clone() }.into()),
        (Rehearsed::Outdated(record, changed), true) => Err(Refusal::RehearsalOutdated {
            rehearsed_at: record.rehearsed_at.to_rfc3339(),
            changed: changed.join(", "),
            plan: plan.path.clone(),
            report: path,
        }
        .into()),
        _ => Ok(rehearsed),
    }
}

/// Production's data as a rehearsal of `plan` sees it: the plan's rows'
/// row versions (a digest, in plan order) and every domain table's row
/// count and contents digest. `replay rehearse` keeps it with its report;
/// the check compares it with the data at apply time.
pub(crate) async fn data_fingerprint(pool: &PgPool, plan: &SealedPlan) -> Result<DataFingerprint, ApplyError> {
    let mut hasher = Sha256::new();
    let mut conn = pool.acquire().await.map_err(failed("fingerprint the planned rows"))?;
    for chunk in plan.rows(CHECK_CHUNK)? {
        let chunk = chunk?;
        let ids: Vec<i64> = chunk.iter().map(|r| r.id).collect();
        let now: HashMap<i64, String> =
            ledger::versions(&mut conn, &ids).await?.into_iter().map(|r| (r.id, r.version)).collect();
        for row in &chunk {
            let version = now.get(&row.id).map_or("gone", String::as_str);
            hasher.update(format!("{}:{version}\n", row.id).as_bytes());
        }
    }
    drop(conn);
    let tables = snapshot::fingerprints(pool, &DOMAIN_TABLES)
        .await?
        .into_iter()
        .map(|(table, rows, digest)| (table, TableFingerprint { rows, digest }))
        .collect();
    Ok(DataFingerprint { rows: hex::encode(hasher.finalize()), tables })
}

/// Refuses if any planned row or workflow domain row changed since planning.
pub(super) async fn check_current(conn: &mut PgConnection, plan: &SealedPlan) -> Result<(), ApplyError> {
    let mut changed = 0;
    let mut examples = Vec::new();
    for chunk in plan.rows(CHECK_CHUNK)? {
        let chunk = chunk?;
        let ids: Vec<i64> = chunk.iter().map(|r| r.id).collect();
        let now: HashMap<i64, String> =
            ledger::versions(conn, &ids).await?.into_iter().map(|r| (r.id, r.version)).collect();
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
    check_domain(conn, plan).await
}

/// Refuses if the domain rows the plan's workflow reads and resets changed
/// since planning (their fingerprint); a plan without a workflow passes.
pub(super) async fn check_domain(conn: &mut PgConnection, plan: &SealedPlan) -> Result<(), ApplyError> {
    if let Some(planned) = &plan.header.workflow {
        let now = workflows::find(&planned.name)?.inspect(conn, &planned.params).await?;
        if now.fingerprint != planned.fingerprint {
            return Err(Refusal::DomainMoved { workflow: planned.name.clone() }.into());
        }
    }
    Ok(())
}

/// Refuses a given backup that is older than `max_age`, unreadable, or of
/// another schema version.
async fn check_backup(pool: &PgPool, path: &Path, max_age: Duration) -> Result<PathBuf, ApplyError> {
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
    let version = crate::store::database::schema_version(pool).await?;
    backup::check_schema(path, version).await.map_err(|e| unusable(e.to_string()))?;
    Ok(path.to_path_buf())
}
