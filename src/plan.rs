//! A replay plan: exactly which ledger rows to replay, why, by whom, against
//! which database, and a digest over all of it, so `replay apply` can refuse
//! a plan that was edited, made elsewhere, or has gone stale.
//!
//! Architecture invariant: building and checking a plan does no I/O; the
//! command reads the rows and writes the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::handlers::Registry;
use crate::ledger::LedgerRow;
use crate::selector::Selector;

/// Plan files this version writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The database a plan was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseIdentity {
    /// `pg_control_system().system_identifier`: tells clusters apart even
    /// when their database names match.
    pub system_identifier: Option<String>,
    pub database: String,
}

/// One planned row, with a fingerprint of its state at planning time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedRow {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub status: String,
    pub fingerprint: String,
}

impl PlannedRow {
    pub fn of(row: &LedgerRow) -> Self {
        Self {
            id: row.id,
            event_id: row.event_id.clone(),
            event_type: row.event_type.clone(),
            status: row.status.clone(),
            fingerprint: fingerprint(row),
        }
    }
}

/// What a row's state is summed up by: any change to it changes this.
pub fn fingerprint(row: &LedgerRow) -> String {
    let state = format!(
        "{}|{}|{}|{:?}|{:?}|{}",
        row.status,
        row.retry_count,
        row.updated_at.to_rfc3339(),
        row.processed_at.map(|t| t.to_rfc3339()),
        row.error_message,
        row.payload
    );
    hex::encode(&Sha256::digest(state.as_bytes())[..12])
}

/// What a person reads in five seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub rows: usize,
    pub by_type: BTreeMap<String, usize>,
    pub by_status: BTreeMap<String, usize>,
    pub by_day: BTreeMap<String, usize>,
    pub first_occurred_at: Option<DateTime<Utc>>,
    pub last_occurred_at: Option<DateTime<Utc>>,
    pub samples: Vec<serde_json::Value>,
}

impl Summary {
    pub fn of(rows: &[LedgerRow]) -> Self {
        let mut summary = Self { rows: rows.len(), ..Self::default() };
        for row in rows {
            *summary.by_type.entry(row.event_type.clone()).or_default() += 1;
            *summary.by_status.entry(row.status.clone()).or_default() += 1;
            *summary.by_day.entry(row.occurred_at.format("%Y-%m-%d").to_string()).or_default() += 1;
        }
        summary.first_occurred_at = rows.iter().map(|r| r.occurred_at).min();
        summary.last_occurred_at = rows.iter().map(|r| r.occurred_at).max();
        summary.samples = rows
            .iter()
            .take(3)
            .map(|r| serde_json::json!({"event_id": r.event_id, "event_type": r.event_type, "payload": r.payload}))
            .collect();
        summary
    }
}

/// The plan as written to `replay-plans/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub version: u32,
    pub plan_id: uuid::Uuid,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub reason: String,
    /// Rows are treated as new: idempotency is skipped. Dangerous.
    pub force: bool,
    pub selector: Selector,
    pub database: DatabaseIdentity,
    pub rows: Vec<PlannedRow>,
    pub summary: Summary,
    pub warnings: Vec<String>,
    /// Event types among the rows whose handlers reach outside the database.
    pub external_effects: Vec<String>,
    /// SHA-256 over the canonical JSON of every field above.
    pub digest: String,
}

/// What a plan is built from.
pub struct Request {
    pub reason: String,
    pub created_by: String,
    pub force: bool,
    pub selector: Selector,
    pub database: DatabaseIdentity,
}

impl Plan {
    /// Builds and seals a plan over `rows`.
    pub fn build(request: Request, rows: &[LedgerRow], registry: &Registry) -> Self {
        let summary = Summary::of(rows);
        let external: Vec<String> = registry
            .external_effect_types()
            .into_iter()
            .filter(|t| summary.by_type.contains_key(*t))
            .map(str::to_string)
            .collect();
        let mut warnings = Vec::new();
        for event_type in &external {
            warnings.push(format!(
                "{event_type} has effects outside the database (restoring a backup does not undo them): applying this plan requires --allow-external-effects"
            ));
        }
        if request.force {
            warnings.push(
                "--force: rows are treated as new and idempotency is skipped; effects may apply twice".to_string(),
            );
        }
        let mut plan = Self {
            version: FORMAT_VERSION,
            plan_id: uuid::Uuid::new_v4(),
            created_at: Utc::now(),
            created_by: request.created_by,
            reason: request.reason,
            force: request.force,
            selector: request.selector,
            database: request.database,
            rows: rows.iter().map(PlannedRow::of).collect(),
            summary,
            warnings,
            external_effects: external,
            digest: String::new(),
        };
        plan.digest = plan.compute_digest();
        plan
    }

    /// The digest of everything but the digest itself.
    pub fn compute_digest(&self) -> String {
        let mut sealed = self.clone();
        sealed.digest = String::new();
        // A struct serializes its fields in declaration order and serde_json
        // maps sort their keys: the bytes are canonical.
        let bytes = serde_json::to_vec(&sealed).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }

    /// Whether the plan is as it was sealed.
    pub fn is_intact(&self) -> bool {
        self.digest == self.compute_digest()
    }

    /// Where the plan is written: `DIR/<created>-<plan id>.json`.
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}-{}.json", self.created_at.format("%Y%m%dT%H%M%SZ"), self.plan_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, event_type: &str, status: &str) -> LedgerRow {
        LedgerRow {
            id,
            event_id: format!("e{id}"),
            event_type: event_type.into(),
            payload: serde_json::json!({"n": id}),
            occurred_at: "2026-01-02T03:04:05Z".parse().unwrap(),
            status: status.into(),
            retry_count: 0,
            error_message: None,
            processed_at: None,
            updated_at: "2026-01-02T03:04:06Z".parse().unwrap(),
        }
    }

    fn request(force: bool) -> Request {
        Request {
            reason: "fix".into(),
            created_by: "ops".into(),
            force,
            selector: Selector::default(),
            database: DatabaseIdentity { system_identifier: Some("1".into()), database: "db".into() },
        }
    }

    #[test]
    fn a_sealed_plan_detects_any_edit() {
        let rows = [row(1, "payment.initiated", "processed"), row(2, "period.opened", "error")];
        let mut plan = Plan::build(request(false), &rows, &Registry::reference());
        assert!(plan.is_intact());
        assert_eq!(plan.summary.by_status.get("error"), Some(&1));
        assert_eq!(plan.external_effects, ["payment.initiated"]);
        assert!(plan.warnings[0].contains("--allow-external-effects"));
        plan.rows.pop();
        assert!(!plan.is_intact(), "removing a row breaks the digest");
        let forced = Plan::build(request(true), &rows, &Registry::reference());
        assert!(forced.warnings.iter().any(|w| w.starts_with("--force")));
    }

    #[test]
    fn fingerprints_follow_row_state() {
        let before = row(1, "period.opened", "processed");
        let mut after = before.clone();
        assert_eq!(fingerprint(&before), fingerprint(&after));
        after.retry_count = 1;
        assert_ne!(fingerprint(&before), fingerprint(&after));
    }
}
