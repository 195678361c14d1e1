//! Resolving a DLQ entry (a failed event or a dead letter), or a whole
//! group of failed events, marked resolved with the operator's note. The
//! change and its audit entry (`dlq.resolve`, `dlq.resolve_group`) commit in
//! one transaction, or neither does.

use serde_json::json;
use sqlx::PgPool;

use crate::store::audit::{self, AuditEntry};
use crate::store::{dead_letters, failed, ledger, StoreError};

/// A DLQ entry, as `replay dlq` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A dead letter, by its id in `dead_letters`.
    Letter(i64),
    /// A failed event, by its event id.
    Event(String),
}

impl Entry {
    /// Reads an id as the DLQ lists it: `dl-N` for a dead letter, anything
    /// else an event id.
    pub fn parse(id: &str) -> Self {
        match id.strip_prefix("dl-").and_then(|n| n.parse().ok()) {
            Some(n) => Self::Letter(n),
            None => Self::Event(id.to_string()),
        }
    }
}

/// Resolves `entry` (audited as `shown_as`, the id the operator typed);
/// false when no unresolved entry has that id, and then nothing changed.
pub async fn resolve(
    pool: &PgPool,
    entry: &Entry,
    shown_as: &str,
    note: &str,
    operator: &str,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await.map_err(failed("resolve a DLQ entry"))?;
    let resolved = match entry {
        Entry::Letter(id) => dead_letters::resolve(&mut tx, *id, note).await?,
        Entry::Event(event_id) => ledger::resolve_error(&mut tx, event_id, note).await?,
    };
    if !resolved {
        return Ok(false);
    }
    let audited = AuditEntry {
        operator: operator.to_string(),
        action: "dlq.resolve".into(),
        details: json!({"id": shown_as, "note": note}),
    };
    audit::append(&mut tx, &audited).await?;
    tx.commit().await.map_err(failed("resolve a DLQ entry"))?;
    Ok(true)
}

/// Resolves every unresolved failed event of `event_type` whose normalized
/// error is `error` (a group of `replay dlq report`), audited once as
/// `dlq.resolve_group` with how many; returns how many (0: nothing changed,
/// nothing audited).
pub async fn resolve_group(
    pool: &PgPool,
    event_type: &str,
    error: &str,
    note: &str,
    operator: &str,
) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await.map_err(failed("resolve a group of failed events"))?;
    let resolved = ledger::resolve_error_group(&mut tx, event_type, error, note).await?;
    if resolved == 0 {
        return Ok(0);
    }
    let audited = AuditEntry {
        operator: operator.to_string(),
        action: "dlq.resolve_group".into(),
        details: json!({"type": event_type, "error": error, "resolved": resolved, "note": note}),
    };
    audit::append(&mut tx, &audited).await?;
    tx.commit().await.map_err(failed("resolve a group of failed events"))?;
    Ok(resolved)
}
