//! Resolving a DLQ entry: a failed event or a dead letter marked resolved
//! with the operator's note. The change and its `dlq.resolve` audit entry
//! commit in one transaction, or neither does.

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
