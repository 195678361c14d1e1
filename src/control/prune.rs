//! Pruning the ledger: old `processed` rows deleted in bounded batches, one
//! short transaction each, so no lock is held for long.
//!
//! Invariant: no row is deleted without an audit entry describing it. Each
//! batch's deletes and its `ledger.prune.batch` entry commit in one
//! transaction (a crash between batches leaves every committed batch
//! audited); the `ledger.prune` entry then sums the run.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;

use crate::store::audit::{self, AuditEntry};
use crate::store::{failed, ledger, StoreError};

/// What an operator asked to prune.
#[derive(Debug, Clone)]
pub struct Prune<'a> {
    pub operator: &'a str,
    /// Rows processed before this time go.
    pub before: DateTime<Utc>,
    /// As the operator wrote it (`90d`), for the audit log.
    pub older_than: &'a str,
    pub batch: i64,
}

/// Prunes in batches until a batch comes back short; returns how many rows
/// were deleted.
pub async fn run(pool: &PgPool, prune: &Prune<'_>) -> Result<u64, StoreError> {
    let mut deleted = 0u64;
    for batch in 1.. {
        let mut tx = pool.begin().await.map_err(failed("prune the ledger"))?;
        let n = ledger::prune_batch(&mut tx, prune.before, prune.batch).await?;
        if n > 0 {
            let entry = AuditEntry {
                operator: prune.operator.to_string(),
                action: "ledger.prune.batch".into(),
                details: json!({"batch": batch, "deleted": n, "processed_before": prune.before}),
            };
            audit::append(&mut tx, &entry).await?;
        }
        tx.commit().await.map_err(failed("prune the ledger"))?;
        deleted += n;
        if n < prune.batch as u64 {
            break;
        }
    }
    let mut tx = pool.begin().await.map_err(failed("audit the prune"))?;
    let entry = AuditEntry {
        operator: prune.operator.to_string(),
        action: "ledger.prune".into(),
        details: json!({"deleted": deleted, "processed_before": prune.before, "older_than": prune.older_than}),
    };
    audit::append(&mut tx, &entry).await?;
    tx.commit().await.map_err(failed("audit the prune"))?;
    Ok(deleted)
}
