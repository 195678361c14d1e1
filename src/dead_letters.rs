//! `dead_letters`: messages that could not be read as an event at all (not
//! JSON, too large, no type), kept with their raw body, headers and the
//! reason, so nothing the broker handed over is thrown away. All SQL on that
//! table lives here.

use serde_json::Value;
use sqlx::PgConnection;

use crate::ledger::LedgerError;

/// A message that is not an event.
pub struct DeadLetter {
    pub exchange: String,
    pub routing_key: String,
    pub message_id: Option<String>,
    pub headers: Value,
    pub body: Vec<u8>,
    pub reason: String,
}

/// Stores the letters in one statement.
pub async fn insert(conn: &mut PgConnection, letters: &[DeadLetter]) -> Result<(), LedgerError> {
    if letters.is_empty() {
        return Ok(());
    }
    let exchanges: Vec<&str> = letters.iter().map(|l| l.exchange.as_str()).collect();
    let keys: Vec<&str> = letters.iter().map(|l| l.routing_key.as_str()).collect();
    let ids: Vec<Option<&str>> = letters.iter().map(|l| l.message_id.as_deref()).collect();
    let headers: Vec<String> = letters.iter().map(|l| l.headers.to_string()).collect();
    let bodies: Vec<&[u8]> = letters.iter().map(|l| l.body.as_slice()).collect();
    let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    sqlx::query(
        "INSERT INTO dead_letters (exchange, routing_key, message_id, headers, body, reason)
         SELECT e, k, m, h::jsonb, b, r
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[]) AS t(e, k, m, h, b, r)",
    )
    .bind(&exchanges)
    .bind(&keys)
    .bind(&ids)
    .bind(&headers)
    .bind(&bodies)
    .bind(&reasons)
    .execute(conn)
    .await
    .map_err(|source| LedgerError::Query { op: "store dead letters", source })?;
    Ok(())
}
