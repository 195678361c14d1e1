//! A throwaway database on the same server as another: created migrated
//! (so it holds the control plane, which no dump carries), used, dropped.
//! `replay rehearse` restores a snapshot into one; the benches measure in
//! one.
//!
//! Invariant: a scratch database's name is ours (a fixed prefix and hex
//! digits, checked by [`Scratch::create`]), so it is spliced into
//! `CREATE DATABASE` and `DROP DATABASE`, which take no parameters.

use sqlx::PgPool;

use super::database::{self, DatabaseError};
use super::{failed, StoreError};
use crate::config::SecretUrl;

/// Why a scratch database could not be made or dropped.
#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("'{0}' is not a scratch database name (lower-case letters, digits and '_' only)")]
    BadName(String),
    #[error("DATABASE_URL {0} is not a URL a scratch database's can be derived from")]
    BadUrl(String),
}

/// A migrated throwaway database on the same server.
pub struct Scratch {
    pub name: String,
    pub url: SecretUrl,
    pub pool: PgPool,
}

impl Scratch {
    /// Creates `name` on `admin_url`'s server and migrates it.
    pub async fn create(admin_url: &SecretUrl, name: &str) -> Result<Self, ScratchError> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return Err(ScratchError::BadName(name.to_string()));
        }
        let admin = database::connect(admin_url, 1).await?;
        let created = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .map_err(failed("create a scratch database"));
        admin.close().await;
        created?;
        let mut url = url::Url::parse(admin_url.expose()).map_err(|_| ScratchError::BadUrl(admin_url.redacted()))?;
        url.set_path(&format!("/{name}"));
        let scratch_url = SecretUrl::new(url.to_string());
        let prepared = async {
            let pool = database::connect(&scratch_url, 4).await?;
            database::migrate(&pool, &scratch_url).await?;
            Ok::<_, DatabaseError>(pool)
        };
        match prepared.await {
            Ok(pool) => Ok(Self { name: name.to_string(), url: scratch_url, pool }),
            Err(error) => {
                // Created but not usable: not left behind.
                let _ = drop_named(admin_url, name).await;
                Err(error.into())
            }
        }
    }

    /// Closes the pool and drops the database (ending any session left on it).
    pub async fn drop_database(&self, admin_url: &SecretUrl) -> Result<(), ScratchError> {
        self.pool.close().await;
        drop_named(admin_url, &self.name).await
    }
}

async fn drop_named(admin_url: &SecretUrl, name: &str) -> Result<(), ScratchError> {
    let admin = database::connect(admin_url, 1).await?;
    let dropped = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&admin)
        .await
        .map_err(failed("drop a scratch database"));
    admin.close().await;
    dropped?;
    Ok(())
}
