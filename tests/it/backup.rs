//! `replay backup` with the real pg_dump and pg_restore.
#![allow(clippy::unwrap_used)] // a test that cannot read its own database should fail loudly

use crate::common::*;
use serde_json::Value;
use sqlx::PgPool;

#[sqlx::test]
async fn a_backup_is_checked_and_leaves_the_control_plane_out(pool: PgPool) {
    let world = World::new(pool).await;
    let dir = tempfile::tempdir().unwrap();
    let out = world.replay(&["backup", "--dir", dir.path().to_str().unwrap(), "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let answer: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    let path = answer["path"].as_str().unwrap();
    assert!(std::path::Path::new(path).starts_with(dir.path()));
    assert!(answer["entries"].as_u64().unwrap() > 10);

    let listing = std::process::Command::new("pg_restore").args(["--list", path]).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("processed_events") && listing.contains("contributions"), "{listing}");
    assert!(!listing.contains("audit_log"), "the control plane stays out of backups");

    // An unreachable database: named, redacted, exit 1, no file left behind.
    let empty = tempfile::tempdir().unwrap();
    let out = world
        .replay_with(
            &["backup", "--dir", empty.path().to_str().unwrap()],
            &[("DATABASE_URL", "postgres://postgres:canary-secret@127.0.0.1:1/nowhere")],
        )
        .await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("pg_dump failed") && !err.contains("canary-secret"), "{err}");
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
    world.cleanup().await;
}
