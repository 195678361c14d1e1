//! Restoring the pre-replay backup without losing what came after it: the
//! events first seen since the backup (not the replay's) are saved in the
//! control plane before the restore, on the server, and put back as `pending`
//! after it, together with what the stop took off the queue, so the
//! workers process them on resume.
//!
//! The restore itself is one transaction (`backup::restore`); the control
//! plane is outside every dump, so the pause, the audit log, the runs and
//! what the stop saved survive it.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::steps::StepError;
use crate::config::Endpoints;
use crate::replay::plan::PlanId;
use crate::store::backup;
use crate::store::emergency_saved;

/// How far before the backup's snapshot time (known to the second) events
/// are saved: a row that the backup does hold is skipped when put back, so an
/// early bound is only slower, never wrong.
const SAVE_MARGIN: Duration = Duration::from_secs(5);
/// The margin when only the dump file's time is known (the dump ran before it).
const FILE_TIME_MARGIN: Duration = Duration::from_secs(3600);

/// Saves the events first seen since the backup (not the replay's, of
/// `plan`), committed, then restores it. Returns how many were saved.
pub(super) async fn restore_keeping(
    pool: &PgPool,
    endpoints: &Endpoints,
    path: &Path,
    plan: Option<PlanId>,
) -> Result<usize, StepError> {
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|source| StepError::BackupUnreadable { path: path.to_path_buf(), source })?;
    let margin = |d: Duration| chrono::Duration::from_std(d).unwrap_or_default();
    let since = match backup::created_at(path).await? {
        Some(created) => created - margin(SAVE_MARGIN),
        None => DateTime::<Utc>::from(modified) - margin(FILE_TIME_MARGIN),
    };
    let version = crate::store::database::schema_version(pool).await?;
    backup::check_schema(path, version).await?;
    let saved = emergency_saved::save_first_seen_since(pool, since, plan.map(PlanId::as_uuid)).await?;
    backup::restore(&endpoints.database_url, path).await?;
    Ok(usize::try_from(saved).unwrap_or(usize::MAX))
}
