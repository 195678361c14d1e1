//! The Postgres pool and the embedded migrations.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use super::{failed, StoreError};
use crate::config::SecretUrl;

/// The migrations in `migrations/`, compiled into the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Failures reaching or preparing the database, naming it by its redacted URL.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("DATABASE_URL {url} is not a valid Postgres URL: {source}")]
    BadUrl { url: String, source: sqlx::Error },
    #[error("cannot reach Postgres at {url}: {source}. Check that the database is running and DATABASE_URL is right")]
    Connect { url: String, source: sqlx::Error },
    #[error("migrating {url} failed: {source}")]
    Migrate { url: String, source: sqlx::migrate::MigrateError },
    #[error("the ledger table processed_events does not exist in {url}: run `replay migrate` first")]
    NotMigrated { url: String },
}

fn options(url: &SecretUrl) -> Result<PgConnectOptions, DatabaseError> {
    use sqlx::ConnectOptions;
    let options = url
        .expose()
        .parse::<PgConnectOptions>()
        .map_err(|source| DatabaseError::BadUrl { url: url.redacted(), source })?;
    // A plan over a million rows is one long statement by design: not a
    // warning an operator should read. Slow statements stay visible at debug.
    Ok(options.log_slow_statements(tracing::log::LevelFilter::Debug, Duration::from_secs(1)))
}

/// Connects a pool, failing now if the database cannot be reached.
pub async fn connect(url: &SecretUrl, max_connections: u32) -> Result<PgPool, DatabaseError> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        // No ping before each checkout: a dead connection fails its first
        // statement instead, and every caller already retries or reports that.
        .test_before_acquire(false)
        .connect_with(options(url)?)
        .await
        .map_err(|source| DatabaseError::Connect { url: url.redacted(), source })
}

/// Applies the embedded migrations.
pub async fn migrate(pool: &PgPool, url: &SecretUrl) -> Result<(), DatabaseError> {
    MIGRATOR.run(pool).await.map_err(|source| DatabaseError::Migrate { url: url.redacted(), source })
}

/// Fails with a clear message when the schema is missing.
pub async fn check_migrated(pool: &PgPool, url: &SecretUrl) -> Result<(), DatabaseError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('processed_events') IS NOT NULL")
        .fetch_one(pool)
        .await
        .map_err(|source| DatabaseError::Connect { url: url.redacted(), source })?;
    if exists {
        Ok(())
    } else {
        Err(DatabaseError::NotMigrated { url: url.redacted() })
    }
}

/// The last migration applied: what a backup must have been taken at to be
/// restored here.
pub async fn schema_version(pool: &PgPool) -> Result<i64, StoreError> {
    sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .map_err(failed("read the schema version"))
}

/// Which database this is, as a plan records the database it was made for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DatabaseIdentity {
    /// `pg_control_system().system_identifier`: tells clusters apart even
    /// when their database names match.
    pub system_identifier: Option<String>,
    pub database: String,
}

impl std::fmt::Display for DatabaseIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.system_identifier {
            Some(system) => write!(f, "database '{}' of cluster {system}", self.database),
            None => write!(f, "database '{}'", self.database),
        }
    }
}

/// Which database this is: the cluster's system identifier (when the role
/// may read it) and the database name.
pub async fn identity(pool: &PgPool) -> Result<DatabaseIdentity, StoreError> {
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(pool)
        .await
        .map_err(failed("read the database's identity"))?;
    let system_identifier: Option<String> =
        sqlx::query_scalar("SELECT system_identifier::text FROM pg_control_system()").fetch_one(pool).await.ok();
    Ok(DatabaseIdentity { system_identifier, database })
}
