//! Backups: a checked `pg_dump -Fc` of the domain and the ledger, and the
//! restore that puts one back.
//!
//! The control plane (`replay_control`: audit log, and later pause and
//! heartbeats) is left out of every dump, so restoring a backup never erases
//! what happened since. Connection settings reach `pg_dump` through its
//! environment (`PGPASSWORD` and friends), never its command line, where any
//! user of the host could read the password.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use chrono::{DateTime, Utc};
use tokio::process::Command;

use crate::config::SecretUrl;

/// The schema backups leave out.
pub const CONTROL_SCHEMA: &str = "replay_control";

/// The `application_name` of a restore's session: a restore left running by
/// an emergency stop that died (killed, its `pg_restore` orphaned) is found
/// by it and ended ([`end_orphaned_restores`]).
pub const RESTORE_SESSION: &str = "replay restore";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot run {tool}: {source}. Install the PostgreSQL client tools (apt-get install postgresql-client) matching the server's major version")]
    Spawn { tool: &'static str, source: std::io::Error },
    #[error("{tool} failed ({status}): {stderr}")]
    Failed { tool: &'static str, status: std::process::ExitStatus, stderr: String },
    #[error("DATABASE_URL {url} cannot be handed to pg_dump: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot write the backup to {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the backup {} was taken at schema version {}, but this database is at version {database}: restoring it would roll the schema back under the workers. Use a backup taken since the last migration, or restore it by hand with every worker stopped, then run `replay migrate`", .path.display(), .backup.map_or("(none)".to_string(), |v| v.to_string()))]
    OtherSchema { path: PathBuf, backup: Option<i64>, database: i64 },
}

/// A dump on disk that `pg_restore --list` could read.
#[derive(Debug, Clone)]
pub struct Backup {
    pub path: PathBuf,
    pub bytes: u64,
    /// Entries in the dump's table of contents.
    pub entries: usize,
    pub taken_at: DateTime<Utc>,
}

/// The libpq environment for `url`: what pg_dump and pg_restore connect with.
pub fn libpq_env(url: &SecretUrl) -> Result<Vec<(&'static str, String)>, BackupError> {
    let bad = |reason: &str| BackupError::BadUrl { url: url.redacted(), reason: reason.to_string() };
    let parsed = url::Url::parse(url.expose()).map_err(|e| bad(&e.to_string()))?;
    let mut env = Vec::new();
    if let Some(host) = parsed.host_str() {
        env.push(("PGHOST", host.to_string()));
    }
    if let Some(port) = parsed.port() {
        env.push(("PGPORT", port.to_string()));
    }
    if !parsed.username().is_empty() {
        env.push(("PGUSER", decode(parsed.username())));
    }
    if let Some(password) = parsed.password() {
        env.push(("PGPASSWORD", decode(password)));
    }
    let database = parsed.path().trim_start_matches('/');
    if database.is_empty() {
        return Err(bad("it names no database"));
    }
    env.push(("PGDATABASE", decode(database)));
    for (key, value) in parsed.query_pairs() {
        if key == "sslmode" {
            env.push(("PGSSLMODE", value.into_owned()));
        }
    }
    Ok(env)
}

fn decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| text.to_string())
}

/// Where a dump taken now into `dir` goes.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(format!("replay-{}.dump", Utc::now().format("%Y%m%dT%H%M%S%.3fZ")))
}

/// Takes a custom-format dump (`-Fc -Z1`: fast, still compressed) into `out`,
/// or a timestamped file in `dir`, and checks it with `pg_restore --list`.
pub async fn take(url: &SecretUrl, dir: &Path, out: Option<PathBuf>) -> Result<Backup, BackupError> {
    take_at(url, out.unwrap_or_else(|| path_in(dir))).await
}

/// Takes a checked dump into `path`. Dropping the future kills `pg_dump`
/// (the caller removes what it wrote).
pub async fn take_at(url: &SecretUrl, path: PathBuf) -> Result<Backup, BackupError> {
    let taken_at = Utc::now();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| BackupError::Io { path: parent.to_path_buf(), source })?;
    }
    let env = libpq_env(url)?;
    let output = Command::new("pg_dump")
        .args(["--format=custom", "--compress=1", "--no-owner"])
        .arg(format!("--exclude-schema={CONTROL_SCHEMA}"))
        .arg("--file")
        .arg(&path)
        .envs(env)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| BackupError::Spawn { tool: "pg_dump", source })?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&path);
        return Err(BackupError::Failed {
            tool: "pg_dump",
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    let entries = check(&path).await?;
    let bytes = std::fs::metadata(&path).map_err(|source| BackupError::Io { path: path.clone(), source })?.len();
    Ok(Backup { path, bytes, entries, taken_at })
}

/// Restores a dump over the database, in one transaction (all or nothing),
/// dropping and recreating what the dump holds and nothing else: the
/// control plane, left out of every dump, is untouched.
pub async fn restore(url: &SecretUrl, path: &Path) -> Result<(), BackupError> {
    check(path).await?;
    let env = libpq_env(url)?;
    let database = env.iter().find(|(k, _)| *k == "PGDATABASE").map(|(_, v)| v.clone()).unwrap_or_default();
    let mut command = Command::new("pg_restore");
    command
        .args(["--clean", "--if-exists", "--single-transaction", "--no-owner", "--exit-on-error"])
        .arg("--dbname")
        .arg(database)
        .arg(path)
        .envs(env)
        .env("PGAPPNAME", RESTORE_SESSION);
    pg_restore("pg_restore", command).await.map(drop)
}

/// Ends the restores of [`restore`] still running in this database (each
/// one's single transaction rolls back), waiting up to 5 s for each; returns
/// how many were ended. Only for a caller holding the apply lock: no live
/// stop is restoring then, so any such session was left by one that died,
/// and it would otherwise erase what the caller writes to the ledger.
pub async fn end_orphaned_restores(pool: &sqlx::PgPool) -> Result<u64, crate::store::StoreError> {
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity
          WHERE datname = current_database() AND application_name = $1 AND pid <> pg_backend_pid()",
    )
    .bind(RESTORE_SESSION)
    .fetch_one(pool)
    .await
    .map_err(crate::store::failed("end restores left running by a stop that died"))?;
    Ok(ended as u64)
}

/// When the dump's snapshot was taken ("Archive created at", to the second),
/// read from its table of contents in UTC; `None` if the line is missing.
pub async fn created_at(path: &Path) -> Result<Option<DateTime<Utc>>, BackupError> {
    let listing = list(path).await?;
    Ok(listing
        .lines()
        .find_map(|l| l.trim_start_matches(';').trim().strip_prefix("Archive created at "))
        .and_then(|t| chrono::NaiveDateTime::parse_from_str(t.trim_end_matches(" UTC"), "%Y-%m-%d %H:%M:%S").ok())
        .map(|t| t.and_utc()))
}

/// Refuses a dump whose migration history (`_sqlx_migrations`, which it
/// holds) ends at another version than the database's: restoring it would
/// put back an older or newer schema than the running code expects.
pub async fn check_schema(path: &Path, database: i64) -> Result<(), BackupError> {
    let mut command = Command::new("pg_restore");
    command.args(["--data-only", "--table", "_sqlx_migrations", "--file", "-"]).arg(path);
    let script = pg_restore("pg_restore --data-only", command).await?;
    // COPY rows, tab-separated, version first, up to the `\.` line.
    let backup = script
        .lines()
        .skip_while(|l| !l.starts_with("COPY "))
        .skip(1)
        .take_while(|l| *l != "\\.")
        .filter_map(|l| l.split('\t').next()?.parse::<i64>().ok())
        .max();
    if backup == Some(database) {
        Ok(())
    } else {
        Err(BackupError::OtherSchema { path: path.to_path_buf(), backup, database })
    }
}

/// Reads a dump's table of contents; fails if it is missing or unreadable.
pub async fn check(path: &Path) -> Result<usize, BackupError> {
    let listing = list(path).await?;
    Ok(listing.lines().filter(|l| !l.starts_with(';') && !l.trim().is_empty()).count())
}

/// `pg_restore --list`, its times in UTC.
async fn list(path: &Path) -> Result<String, BackupError> {
    let mut command = Command::new("pg_restore");
    command.arg("--list").arg(path).env("TZ", "UTC");
    pg_restore("pg_restore --list", command).await
}

/// Runs a `pg_restore` command to its end; its stdout, or why it failed.
async fn pg_restore(tool: &'static str, mut command: Command) -> Result<String, BackupError> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| BackupError::Spawn { tool: "pg_restore", source })?;
    if !output.status.success() {
        return Err(BackupError::Failed {
            tool,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_goes_to_the_environment_only() {
        let url = SecretUrl::new("postgres://ops:s%40cret@db.example:5433/habitat?sslmode=require");
        let env = libpq_env(&url).unwrap();
        assert!(env.contains(&("PGPASSWORD", "s@cret".to_string())));
        assert!(env.contains(&("PGHOST", "db.example".to_string())));
        assert!(env.contains(&("PGPORT", "5433".to_string())));
        assert!(env.contains(&("PGDATABASE", "habitat".to_string())));
        assert!(env.contains(&("PGSSLMODE", "require".to_string())));
        let err = libpq_env(&SecretUrl::new("postgres://ops:pw@db/")).unwrap_err().to_string();
        assert!(err.contains("names no database") && !err.contains("pw@"), "{err}");
    }
}
