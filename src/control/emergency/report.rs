//! The incident report: everything an emergency stop did, printed, written
//! as `incident-<time>.json` where whoever looks into the replay finds it,
//! and summarized in the audit log.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;

use super::steps::{Step, StepError, Steps};
use super::Request;
use crate::control::pause::Paused;
use crate::replay::plan::PlanId;
use crate::store::audit::{self, AuditEntry};

/// Where an incident report goes with neither `--report-dir` nor a backup
/// to put it next to: where `replay backup` and `replay apply` put dumps.
const DEFAULT_REPORT_DIR: &str = "backups";

/// Everything the stop did, as printed and written to the incident report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub started_at: DateTime<Utc>,
    pub operator: String,
    pub reason: String,
    pub plan_id: Option<PlanId>,
    pub pause: Option<Paused>,
    pub purged_replay_messages: usize,
    pub kept_messages: usize,
    pub dead_lettered: usize,
    pub restored_from: Option<PathBuf>,
    /// Events added to the ledger as pending: the kept messages and the
    /// events first seen since the backup (not the replay's), less those the
    /// ledger already held; with what a stop that died had saved.
    pub kept_events: u64,
    pub steps: Steps,
    pub report_path: Option<PathBuf>,
}

impl Report {
    /// A report of a stop starting now, with nothing done yet.
    pub(super) fn start(request: &Request) -> Self {
        Self {
            started_at: Utc::now(),
            operator: request.operator.clone(),
            reason: request.reason.clone(),
            plan_id: request.restore.plan_id(),
            pause: None,
            purged_replay_messages: 0,
            kept_messages: 0,
            dead_lettered: 0,
            restored_from: None,
            kept_events: 0,
            steps: Steps::default(),
            report_path: None,
        }
    }

    pub fn failed(&self) -> Vec<&Step> {
        self.steps.failed()
    }

    /// Records the stop in the audit log, and writes the incident report
    /// into its directory (see [`report_dir`]); either failing is a step
    /// of the report. The audit entry names the file before it is written,
    /// and the report forgets the path if writing it failed.
    pub(super) async fn file(&mut self, pool: &PgPool, request: &Request) {
        let dir = report_dir(request, request.restore.backup());
        let path = dir.join(format!("incident-{}.json", self.started_at.format("%Y%m%dT%H%M%S%.3fZ")));
        self.report_path = Some(path.clone());
        if let Err(e) = self.audit(pool).await {
            self.steps.failed_untimed("audit", e);
        }
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, serde_json::to_vec_pretty(&*self).unwrap_or_default()));
        if let Err(source) = written {
            self.steps.failed_untimed("incident report", StepError::ReportNotWritten { path, source });
            self.report_path = None;
        }
    }

    async fn audit(&self, pool: &PgPool) -> Result<(), StepError> {
        let mut tx = pool.begin().await?;
        let entry = AuditEntry {
            operator: self.operator.clone(),
            action: "emergency.stop".into(),
            details: json!({
                "reason": self.reason,
                "plan_id": self.plan_id,
                "restored_from": self.restored_from,
                "purged_replay_messages": self.purged_replay_messages,
                "kept_messages": self.kept_messages,
                "kept_events": self.kept_events,
                "incident_report": self.report_path,
                "steps": self.steps,
            }),
        };
        audit::append(&mut tx, &entry).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Where the incident report goes: the directory the operator named; else
/// next to the backup, where whoever looks into the replay finds its dump
/// (only if that directory exists: a backup that is missing is no reason to
/// create a directory for it); else [`DEFAULT_REPORT_DIR`].
fn report_dir(request: &Request, backup: Option<&Path>) -> PathBuf {
    if let Some(dir) = &request.report_dir {
        return dir.clone();
    }
    let beside = backup.and_then(Path::parent).map(|dir| if dir.as_os_str().is_empty() { Path::new(".") } else { dir });
    match beside {
        Some(dir) if dir.is_dir() => dir.to_path_buf(),
        _ => PathBuf::from(DEFAULT_REPORT_DIR),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::Restore;
    use super::*;

    fn request(report_dir: Option<&str>) -> Request {
        Request {
            operator: "carol".into(),
            reason: "r".into(),
            restore: Restore::Nothing,
            wait: Duration::from_secs(1),
            report_dir: report_dir.map(PathBuf::from),
        }
    }

    #[test]
    fn the_report_goes_where_named_else_next_to_the_backup_else_to_backups() {
        let dir = tempfile::tempdir().unwrap();
        let dump = dir.path().join("pre.dump");
        assert_eq!(report_dir(&request(Some("/tmp/incidents")), Some(&dump)), PathBuf::from("/tmp/incidents"));
        assert_eq!(report_dir(&request(None), Some(&dump)), dir.path());
        assert_eq!(report_dir(&request(None), Some(Path::new("pre.dump"))), PathBuf::from("."));
        // A missing backup's directory is not made up for its report.
        let missing = dir.path().join("gone").join("pre.dump");
        assert_eq!(report_dir(&request(None), Some(&missing)), PathBuf::from(DEFAULT_REPORT_DIR));
        assert_eq!(report_dir(&request(None), None), PathBuf::from(DEFAULT_REPORT_DIR));
    }
}
