//! Replay workflows: the runbook's multi-step replays (period close, a
//! member's allocations) as one planned step. A workflow reads the domain at
//! plan time, refuses what must not be redone (money already handed out),
//! and describes the domain rows it resets and the events it triggers; at
//! apply time it checks the domain has not moved and resets those rows in the
//! apply's transaction.
//!
//! One file per workflow behind the [`Workflow`] trait, listed in [`all`]:
//! adding one is a file and a line there.

mod member_allocations;
mod period_close;

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

/// Parameters a workflow is given on the command line (or, at apply time,
/// resolved in its plan).
pub type Params = BTreeMap<String, String>;

/// Why a workflow cannot be planned or applied.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// A missing or malformed parameter, or an unknown workflow: exit 2.
    #[error("{0}")]
    Usage(String),
    /// The domain's state forbids it (allocations already paid): exit 3.
    #[error("{0}")]
    Refused(String),
    #[error("workflow query failed: {0}")]
    Database(#[from] sqlx::Error),
}

/// An event a workflow publishes, before the plan gives it an id.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerSpec {
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub payload: Value,
}

/// What a workflow found and will do.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// Parameters resolved to ids, so applying it later means the same rows.
    pub params: Params,
    pub steps: Vec<String>,
    pub domain_rows: BTreeMap<String, i64>,
    /// Digest of the domain rows read: apply refuses if it changed.
    pub fingerprint: String,
    pub triggers: Vec<TriggerSpec>,
}

#[async_trait]
pub trait Workflow: Send + Sync {
    /// The name given to `--workflow`.
    fn name(&self) -> &'static str;

    /// Its parameters, for the usage message, e.g. `--period ID|latest-closed`.
    fn usage(&self) -> &'static str;

    /// Reads the domain and says what the workflow would do, or refuses.
    /// Changes nothing.
    async fn inspect(&self, conn: &mut PgConnection, params: &Params) -> Result<Inspection, WorkflowError>;

    /// Resets the domain rows, inside the apply's transaction. `params` are
    /// the resolved ones from the plan.
    async fn reset(&self, conn: &mut PgConnection, params: &Params) -> Result<(), WorkflowError>;
}

/// Every workflow `replay plan --workflow` knows.
pub fn all() -> Vec<Box<dyn Workflow>> {
    vec![Box::new(period_close::PeriodClose), Box::new(member_allocations::MemberAllocations)]
}

/// The workflow named `name`.
pub fn find(name: &str) -> Result<Box<dyn Workflow>, WorkflowError> {
    all().into_iter().find(|w| w.name() == name).ok_or_else(|| {
        let known: Vec<String> = all().iter().map(|w| format!("{} {}", w.name(), w.usage())).collect();
        WorkflowError::Usage(format!("unknown workflow '{name}': use one of: {}", known.join("; ")))
    })
}

/// A required parameter as a UUID.
fn uuid_param(params: &Params, key: &str, usage: &str) -> Result<uuid::Uuid, WorkflowError> {
    let value = params.get(key).ok_or_else(|| WorkflowError::Usage(format!("this workflow needs --{key}: {usage}")))?;
    value.parse().map_err(|_| WorkflowError::Usage(format!("--{key} '{value}' is not a UUID: {usage}")))
}

/// Digest of the rows a workflow read, over their text.
fn fingerprint(parts: impl IntoIterator<Item = String>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(&hasher.finalize()[..16])
}

/// Refuses when any allocation was already handed out.
fn refuse_handed_out(
    allocations: &[crate::handlers::allocation::AllocationState],
    what: &str,
) -> Result<(), WorkflowError> {
    let handed_out: Vec<_> = allocations.iter().filter(|a| a.status == "distributed" || a.status == "paid").collect();
    if handed_out.is_empty() {
        return Ok(());
    }
    let paid = handed_out.iter().filter(|a| a.status == "paid").count();
    Err(WorkflowError::Refused(format!(
        "{what} has {} allocation(s) already distributed or paid ({paid} paid): recomputing them would change money already handed out. \
         Correct them with a compensating event instead; this workflow only redoes allocations that are still `calculated`",
        handed_out.len()
    )))
}
