//! The operator's desk: a scratch directory for one test's plans and
//! backups, and `replay plan` and `replay apply` run from it.
#![allow(clippy::unwrap_used)] // a test that cannot read its own files should fail loudly

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;

use super::process::{stderr_of, stdout_of};
use super::world::World;

/// A scratch directory holding the plans and the backups of one test.
pub struct Desk {
    pub dir: tempfile::TempDir,
}

impl Desk {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    pub fn plans(&self) -> String {
        self.dir.path().join("plans").display().to_string()
    }

    pub fn backups(&self) -> PathBuf {
        self.dir.path().join("backups")
    }

    pub fn backup_files(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.backups()) {
            Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
            Err(_) => vec![],
        }
    }

    /// Runs `replay plan ... --json` and returns its answer.
    pub async fn plan(&self, world: &World, args: &[&str]) -> Value {
        let plans = self.plans();
        let mut full = vec!["plan", "--out-dir", plans.as_str(), "--operator", "alice", "--json"];
        full.extend(args);
        let out = world.replay(&full).await;
        assert_eq!(out.status.code(), Some(0), "{full:?}: {}", stderr_of(&out));
        serde_json::from_str(&stdout_of(&out)).unwrap()
    }

    /// Starts `replay apply PLAN --yes --operator bob --rate RATE` with some
    /// of the world's settings replaced, its output piped.
    pub fn spawn_apply(
        &self,
        world: &World,
        plan: &str,
        rate: &str,
        overrides: &[(&str, &str)],
    ) -> tokio::process::Child {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_replay"))
            .args(["apply", plan, "--yes", "--operator", "bob", "--rate", rate])
            .arg("--backup-dir")
            .arg(self.backups())
            .envs(world.env())
            .envs(overrides.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn replay apply")
    }

    /// Runs `replay apply PLAN --operator bob` with `args`.
    pub async fn apply(&self, world: &World, plan: &str, args: &[&str]) -> std::process::Output {
        let backups = self.backups().display().to_string();
        let mut full = vec!["apply", plan, "--operator", "bob", "--backup-dir", backups.as_str()];
        full.extend(args);
        world.replay(&full).await
    }
}
