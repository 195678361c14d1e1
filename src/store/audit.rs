//! The audit log, `replay_control.audit_log`: append-only (the database
//! refuses UPDATE, DELETE and TRUNCATE), each entry carrying a SHA-256 hash
//! chained to the previous one, so tampering by someone who can bypass the
//! triggers is still detectable. All SQL on that table lives here.

use super::{failed, StoreError};
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};

/// The hash the first entry chains to.
pub const GENESIS: &str = "genesis";

/// An action to record.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub operator: String,
    pub action: String,
    pub details: Value,
}

/// A stored entry.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub operator: String,
    pub action: String,
    pub details: Value,
    pub prev_hash: String,
    pub entry_hash: String,
}

/// The hash of an entry: over the previous hash and the entry's canonical
/// JSON (serde_json sorts object keys).
pub fn entry_hash(prev_hash: &str, at: DateTime<Utc>, operator: &str, action: &str, details: &Value) -> String {
    let canonical = serde_json::json!({
        "prev_hash": prev_hash,
        "at": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "operator": operator,
        "action": action,
        "details": details,
    });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// Appends an entry inside the caller's transaction, so it commits or rolls
/// back with the change it records. Appends are serialized by a transaction
/// lock, so the chain never forks.
pub async fn append(conn: &mut PgConnection, entry: &AuditEntry) -> Result<AuditRecord, StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('replay_control.audit_log'))")
        .execute(&mut *conn)
        .await
        .map_err(failed("lock the audit chain"))?;
    let prev: Option<String> =
        sqlx::query_scalar("SELECT entry_hash FROM replay_control.audit_log ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(failed("read the last audit entry"))?;
    let prev_hash = prev.unwrap_or_else(|| GENESIS.to_string());
    // Postgres keeps microseconds: hash what will be stored.
    let at = Utc::now().trunc_subsecs(6);
    let hash = entry_hash(&prev_hash, at, &entry.operator, &entry.action, &entry.details);
    sqlx::query_as(
        "INSERT INTO replay_control.audit_log (at, operator, action, details, prev_hash, entry_hash)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING id, at, operator, action, details, prev_hash, entry_hash",
    )
    .bind(at)
    .bind(&entry.operator)
    .bind(&entry.action)
    .bind(&entry.details)
    .bind(&prev_hash)
    .bind(&hash)
    .fetch_one(&mut *conn)
    .await
    .map_err(failed("append an audit entry"))
}

/// What `replay audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Intact {
        entries: usize,
    },
    /// The first entry whose stored hash or link does not hold.
    Broken {
        id: i64,
        problem: String,
    },
}

/// The newest entries, newest first, from before entry `before` if given:
/// a keyset page of the log.
pub async fn recent(pool: &PgPool, before: Option<i64>, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
    sqlx::query_as(
        "SELECT id, at, operator, action, details, prev_hash, entry_hash FROM replay_control.audit_log
          WHERE id < $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(failed("read the audit log"))
}

/// Walks the whole chain in order.
pub async fn verify(pool: &PgPool) -> Result<Verdict, StoreError> {
    let records: Vec<AuditRecord> = sqlx::query_as(
        "SELECT id, at, operator, action, details, prev_hash, entry_hash FROM replay_control.audit_log ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .map_err(failed("read the audit log"))?;
    let mut expected_prev = GENESIS.to_string();
    for record in &records {
        if record.prev_hash != expected_prev {
            return Ok(Verdict::Broken {
                id: record.id,
                problem: "it does not chain to the entry before it (an entry was deleted or inserted)".into(),
            });
        }
        let hash = entry_hash(&record.prev_hash, record.at, &record.operator, &record.action, &record.details);
        if hash != record.entry_hash {
            return Ok(Verdict::Broken {
                id: record.id,
                problem: "its content no longer matches its hash (it was edited)".into(),
            });
        }
        expected_prev = record.entry_hash.clone();
    }
    Ok(Verdict::Intact { entries: records.len() })
}
