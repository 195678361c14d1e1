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

use sqlx::{PgConnection, PgPool};

use super::{ApplyError, BackupSource, Refusal, Request};
use crate::replay::plan::SealedPlan;
use crate::replay::workflows;
use crate::store::backup;
use crate::store::failed;
use crate::store::ledger;
use crate::store::pause;
use crate::store::runs::{self, ControlLock, ReplayRun, RunState};

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
    let existing_backup = match (&request.backup, &run) {
        (BackupSource::Existing { path, max_age }, None) => Some(check_backup(pool, path, *max_age).await?),
        _ => None,
    };
    Ok(Checked { plan, run, existing_backup, _lock: lock })
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
