//! `dead_letters`: messages that could not be read as an event at all (not
//! JSON, too large, no type), kept with their raw body, headers and the
//! reason, so nothing the broker handed over is thrown away. All SQL on that
//! table lives here.

use super::{failed, StoreError};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgArguments;
use sqlx::{PgConnection, PgPool, Postgres};

/// A message that is not an event.
pub struct DeadLetter {
    pub exchange: String,
    pub routing_key: String,
    pub message_id: Option<String>,
    pub headers: Value,
    pub body: Vec<u8>,
    pub reason: String,
}

/// Binds the letters as the six column arrays an `unnest` insert reads, in
/// this order: exchange, routing key, message id, headers (JSON text), body,
/// reason. Shared with the emergency stop's save table, which has the same
/// columns.
pub(super) fn bind_columns<'q>(
    query: sqlx::query::Query<'q, Postgres, PgArguments>,
    letters: &'q [DeadLetter],
) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    query
        .bind(letters.iter().map(|l| l.exchange.as_str()).collect::<Vec<_>>())
        .bind(letters.iter().map(|l| l.routing_key.as_str()).collect::<Vec<_>>())
        .bind(letters.iter().map(|l| l.message_id.as_deref()).collect::<Vec<_>>())
        .bind(letters.iter().map(|l| l.headers.to_string()).collect::<Vec<_>>())
        .bind(letters.iter().map(|l| l.body.as_slice()).collect::<Vec<_>>())
        .bind(letters.iter().map(|l| l.reason.as_str()).collect::<Vec<_>>())
}

/// Stores the letters in one statement.
pub async fn insert(conn: &mut PgConnection, letters: &[DeadLetter]) -> Result<(), StoreError> {
    if letters.is_empty() {
        return Ok(());
    }
    bind_columns(
        sqlx::query(
            "INSERT INTO dead_letters (exchange, routing_key, message_id, headers, body, reason)
             SELECT e, k, m, h::jsonb, b, r
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[]) AS t(e, k, m, h, b, r)",
        ),
        letters,
    )
    .execute(conn)
    .await
    .map_err(failed("store dead letters"))?;
    Ok(())
}

/// A stored dead letter.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct StoredLetter {
    pub id: i64,
    pub received_at: DateTime<Utc>,
    pub exchange: String,
    pub routing_key: String,
    pub message_id: Option<String>,
    pub headers: Value,
    #[serde(skip)]
    pub body: Vec<u8>,
    pub reason: String,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_note: Option<String>,
}

const COLUMNS: &str =
    "id, received_at, exchange, routing_key, message_id, headers, body, reason, resolved_at, resolved_note";

/// Unresolved dead letters, most recent first.
pub async fn unresolved(pool: &PgPool, limit: i64) -> Result<Vec<StoredLetter>, StoreError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM dead_letters WHERE resolved_at IS NULL ORDER BY received_at DESC, id DESC LIMIT $1"
    )))
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(failed("list dead letters"))
}

/// How many dead letters are not resolved.
pub async fn count_unresolved(pool: &PgPool) -> Result<i64, StoreError> {
    sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE resolved_at IS NULL")
        .fetch_one(pool)
        .await
        .map_err(failed("count dead letters"))
}

/// One dead letter.
pub async fn find(pool: &PgPool, id: i64) -> Result<Option<StoredLetter>, StoreError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1")))
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(failed("read a dead letter"))
}

/// Unresolved dead letters since `since`, grouped by routing key and reason.
pub async fn report(pool: &PgPool, since: DateTime<Utc>) -> Result<Vec<super::ReportGroup>, StoreError> {
    sqlx::query_as(
        "SELECT routing_key AS what, reason AS why, count(*) AS count,
                min(received_at) AS first_seen, max(received_at) AS last_seen FROM dead_letters
          WHERE resolved_at IS NULL AND received_at >= $1 GROUP BY 1, 2 ORDER BY 3 DESC, 1",
    )
    .bind(since)
    .fetch_all(pool)
    .await
    .map_err(failed("report dead letters"))
}

/// Marks a dead letter resolved, inside the caller's transaction; false if
/// no unresolved letter has that id.
pub async fn resolve(conn: &mut PgConnection, id: i64, note: &str) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE dead_letters SET resolved_at = now(), resolved_note = $2 WHERE id = $1 AND resolved_at IS NULL",
    )
    .bind(id)
    .bind(note)
    .execute(conn)
    .await
    .map_err(failed("resolve a dead letter"))?;
    Ok(done.rows_affected() == 1)
}
