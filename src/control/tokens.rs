//! The console's and the API's tokens: made (a random secret shown once,
//! only its hash stored), revoked, and recognised. Creating and revoking are
//! audited in the transaction that changes the table; the audit entry names
//! the token and its role, never the token itself.

use std::fmt;

use rand::RngCore;
use serde_json::json;
use sqlx::PgPool;

use crate::store::audit::{self, AuditEntry};
use crate::store::tokens::{self, Holder, Role, TokenEntry, TokenHash};
use crate::store::{failed, StoreError};

/// What every token starts with, so a leaked one is recognisable in a scan.
const PREFIX: &str = "rpl_";
/// Random bytes in a token (hex-encoded after the prefix).
const SECRET_BYTES: usize = 32;

/// A new token's secret. It never prints itself (`Debug` and `Display` show
/// a placeholder): only [`Secret::reveal`] gives it out, for the one answer
/// that shows it.
pub struct Secret(String);

impl Secret {
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("…")
    }
}

/// A token just made.
#[derive(Debug)]
pub struct NewToken {
    pub name: String,
    pub role: Role,
    pub secret: Secret,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "'{0}' is not a token name: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
    )]
    BadName(String),
    #[error("a token named '{0}' exists already (names of revoked tokens are kept too): choose another name")]
    NameTaken(String),
    #[error("no token named '{0}' is in force: `replay token list` shows the tokens")]
    Unknown(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `name` may name a token (the table's CHECK says the same).
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Makes a token named `name` with `role`, audited as `operator`'s
/// `token.create`.
pub async fn create(pool: &PgPool, name: &str, role: Role, operator: &str) -> Result<NewToken, TokenError> {
    if !valid_name(name) {
        return Err(TokenError::BadName(name.to_string()));
    }
    let mut bytes = [0u8; SECRET_BYTES];
    // ThreadRng is a CSPRNG seeded from the OS.
    rand::rng().fill_bytes(&mut bytes);
    let secret = Secret(format!("{PREFIX}{}", hex::encode(bytes)));
    let mut tx = pool.begin().await.map_err(failed("create an API token"))?;
    if !tokens::insert(&mut tx, name, role, &TokenHash::of(secret.reveal()), operator).await? {
        return Err(TokenError::NameTaken(name.to_string()));
    }
    let entry = AuditEntry {
        operator: operator.to_string(),
        action: "token.create".into(),
        details: json!({"name": name, "role": role}),
    };
    audit::append(&mut tx, &entry).await?;
    tx.commit().await.map_err(failed("create an API token"))?;
    Ok(NewToken { name: name.to_string(), role, secret })
}

/// Revokes the token `name`, audited as `operator`'s `token.revoke`.
pub async fn revoke(pool: &PgPool, name: &str, operator: &str) -> Result<TokenEntry, TokenError> {
    let mut tx = pool.begin().await.map_err(failed("revoke an API token"))?;
    let Some(revoked) = tokens::revoke(&mut tx, name).await? else {
        return Err(TokenError::Unknown(name.to_string()));
    };
    let entry = AuditEntry {
        operator: operator.to_string(),
        action: "token.revoke".into(),
        details: json!({"name": name, "role": revoked.role}),
    };
    audit::append(&mut tx, &entry).await?;
    tx.commit().await.map_err(failed("revoke an API token"))?;
    Ok(revoked)
}

/// Who `presented` stands for, if it is a token in force.
pub async fn holder(pool: &PgPool, presented: &str) -> Result<Option<Holder>, StoreError> {
    if !presented.starts_with(PREFIX) {
        return Ok(None);
    }
    tokens::holder(pool, &TokenHash::of(presented)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_names_are_short_plain_words() {
        assert!(valid_name("ci-bot.2"));
        assert!(!valid_name(""));
        assert!(!valid_name("-lead"));
        assert!(!valid_name("a b"));
        assert!(!valid_name("<script>"));
        assert!(!valid_name(&"x".repeat(65)));
    }

    #[test]
    fn a_secret_never_prints_itself() {
        let secret = Secret("rpl_canary".into());
        assert!(!format!("{secret} {secret:?}").contains("canary"));
        assert_eq!(secret.reveal(), "rpl_canary");
    }
}
