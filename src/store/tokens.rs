//! `replay_control.api_tokens`: the console's and the API's tokens, by name
//! and role. Only a token's SHA-256 is stored (`TokenHash`); the token
//! itself exists once, in the answer of `replay token create`. All SQL on
//! that table lives here.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};

use super::{failed, StoreError};

/// What a token may do. Each role may do everything the one before it may.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, sqlx::Type, serde::Serialize, serde::Deserialize,
)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Also plans, applies, resolves dead letters, pauses and resumes.
    Operator,
    /// Also runs the emergency stop, prunes and manages tokens.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }

    /// The role named `text` (as `--role` and the table spell it).
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Viewer, Self::Operator, Self::Admin].into_iter().find(|r| r.as_str() == text)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The SHA-256 of a token, in hex: what the table holds and is searched by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHash(String);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        Self(hex::encode(Sha256::digest(token.as_bytes())))
    }
}

/// A token as listed: never the token, nor its hash.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Who a presented token stands for.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Holder {
    pub name: String,
    pub role: Role,
}

/// Stores a new token inside the caller's transaction; `false` if a token of
/// that name exists already (revoked ones included: names are never reused).
pub async fn insert(
    conn: &mut PgConnection,
    name: &str,
    role: Role,
    hash: &TokenHash,
    created_by: &str,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO replay_control.api_tokens (name, role, token_sha256, created_by) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(role)
    .bind(&hash.0)
    .bind(created_by)
    .execute(conn)
    .await
    .map_err(failed("store a new API token"))?;
    Ok(inserted.rows_affected() == 1)
}

/// Every token, newest first.
pub async fn list(pool: &PgPool) -> Result<Vec<TokenEntry>, StoreError> {
    sqlx::query_as(
        "SELECT name, role, created_by, created_at, revoked_at FROM replay_control.api_tokens ORDER BY created_at DESC, name",
    )
    .fetch_all(pool)
    .await
    .map_err(failed("list API tokens"))
}

/// Revokes the token `name` inside the caller's transaction; returns it, or
/// `None` if no token of that name is in force.
pub async fn revoke(conn: &mut PgConnection, name: &str) -> Result<Option<TokenEntry>, StoreError> {
    sqlx::query_as(
        "UPDATE replay_control.api_tokens SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL
         RETURNING name, role, created_by, created_at, revoked_at",
    )
    .bind(name)
    .fetch_optional(conn)
    .await
    .map_err(failed("revoke an API token"))
}

/// The holder of the token whose hash is `hash`, if it is in force.
pub async fn holder(pool: &PgPool, hash: &TokenHash) -> Result<Option<Holder>, StoreError> {
    sqlx::query_as("SELECT name, role FROM replay_control.api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL")
        .bind(&hash.0)
        .fetch_optional(pool)
        .await
        .map_err(failed("look up an API token"))
}

/// The role of the token named `name`, if it is in force: a browser session
/// opened with a token lasts only as long as the token.
pub async fn role_in_force(pool: &PgPool, name: &str) -> Result<Option<Role>, StoreError> {
    sqlx::query_scalar("SELECT role FROM replay_control.api_tokens WHERE name = $1 AND revoked_at IS NULL")
        .bind(name)
        .fetch_optional(pool)
        .await
        .map_err(failed("look up an API token by name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_order_by_what_they_may_do() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert_eq!(Role::parse("operator"), Some(Role::Operator));
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn a_hash_is_the_hex_sha256_of_the_token() {
        // sha256("abc"), from FIPS 180-2's examples.
        assert_eq!(TokenHash::of("abc").0, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
