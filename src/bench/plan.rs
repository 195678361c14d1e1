//! `replay bench plan`: the real `replay plan` binary over the whole ledger
//! and over 10,000 rows of it, with its peak memory, next to a raw streamed
//! read of the same rows.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::TryStreamExt;
use sqlx::{PgPool, Row};

use crate::config::Endpoints;

use super::*;

/// What `replay bench plan` prints.
pub struct PlanReport {
    pub rows: usize,
    /// (raw streamed read, plan over every row, plan over 10,000 rows) per round.
    pub rounds: Vec<(Drain, Drain, Drain)>,
    /// Peak RSS in KiB of the plan over every row, and over 10,000 rows.
    pub peak_kib: (u64, u64),
    pub plan_bytes: u64,
}

impl std::fmt::Display for PlanReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = |f: &mut std::fmt::Formatter<'_>, name: &str, d: &Drain| {
            writeln!(f, "{name:<52} {:>8} rows in {:>6.2} s = {:>9.0} rows/s", d.events, d.seconds, d.rate())
        };
        for (round, (raw, all, small)) in self.rounds.iter().enumerate() {
            writeln!(f, "round {}:", round + 1)?;
            line(f, "  raw streamed read of the same columns (sqlx):", raw)?;
            line(f, "  replay plan --all (summary + sealed plan file):", all)?;
            line(f, "  replay plan --all --limit 10000:", small)?;
        }
        let seconds = median(self.rounds.iter().map(|(_, all, _)| all.seconds).collect());
        let ratio = median(self.rounds.iter().map(|(raw, all, _)| all.rate() / raw.rate()).collect());
        writeln!(f, "plan over {} rows: {seconds:.2} s (median; target < 2 s)", self.rows)?;
        writeln!(f, "ratio: plan / raw read = {ratio:.2}")?;
        writeln!(
            f,
            "peak RSS: {:.1} MiB for {} rows, {:.1} MiB for 10000 rows (flat: the rows stream to the file)",
            self.peak_kib.0 as f64 / 1024.0,
            self.rows,
            self.peak_kib.1 as f64 / 1024.0
        )?;
        writeln!(f, "plan file: {:.1} MiB", self.plan_bytes as f64 / 1_048_576.0)
    }
}

/// `replay bench plan`.
pub async fn run(endpoints: &Endpoints, rows: usize, keep: bool, exe: &Path) -> anyhow::Result<PlanReport> {
    let (scratch, names) = scratch(endpoints, "plan").await?;
    let result = measure_plan(&names, &scratch.pool, rows, exe).await;
    finish(endpoints, scratch, &names, keep).await?;
    result
}

async fn measure_plan(names: &Endpoints, pool: &PgPool, rows: usize, exe: &Path) -> anyhow::Result<PlanReport> {
    eprintln!("seeding {rows} ledger rows…");
    seed(pool, rows).await?;
    let work = tempfile::tempdir().context("creating a scratch directory")?;
    let dir = work.path().display().to_string();
    let mut rounds = Vec::with_capacity(ROUNDS);
    let mut peaks = (0, 0);
    let mut plan_bytes = 0;
    for round in 1..=ROUNDS {
        eprintln!("round {round}/{ROUNDS}…");
        let raw = raw_read(pool).await?;
        let (all, peak_all, path) =
            timed_plan(exe, names, &["plan", "--all", "--reason", "bench", "--out-dir", &dir, "--json"]).await?;
        plan_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        std::fs::remove_file(&path).ok();
        let (small, peak_small, path) = timed_plan(
            exe,
            names,
            &["plan", "--all", "--limit", "10000", "--reason", "bench", "--out-dir", &dir, "--json"],
        )
        .await?;
        std::fs::remove_file(&path).ok();
        rounds.push((
            Drain { events: rows, ..raw },
            Drain { events: rows, ..all },
            Drain { events: 10_000.min(rows), ..small },
        ));
        peaks = (peak_all, peak_small);
    }
    Ok(PlanReport { rows, rounds, peak_kib: peaks, plan_bytes })
}

/// The baseline: the same rows and columns, streamed and dropped.
async fn raw_read(pool: &PgPool) -> anyhow::Result<Drain> {
    let started = Instant::now();
    let mut rows = sqlx::query(
        "SELECT id, event_id, event_type, status, occurred_at, xmin::text FROM processed_events ORDER BY occurred_at, id",
    )
    .fetch(pool);
    let mut n = 0usize;
    while let Some(row) = rows.try_next().await? {
        let id: i64 = row.try_get_unchecked(0)?;
        n += usize::from(id > 0);
    }
    Ok(Drain { events: n, seconds: started.elapsed().as_secs_f64() })
}

/// Runs a plan command, sampling its peak RSS until it exits.
async fn timed_plan(exe: &Path, names: &Endpoints, args: &[&str]) -> anyhow::Result<(Drain, u64, PathBuf)> {
    let started = Instant::now();
    let child = command(exe, names, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let pid = child.id().context("plan exited at once")?;
    let waiting = tokio::spawn(child.wait_with_output());
    let mut peak = 0;
    while !waiting.is_finished() {
        peak = peak.max(proc_status_kib(pid, "VmHWM:"));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let output = waiting.await??;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(output.status.success(), "replay plan failed: {}", String::from_utf8_lossy(&output.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let path = answer["plan_path"].as_str().map(PathBuf::from).context("plan printed no path")?;
    Ok((Drain { events: 0, seconds }, peak, path))
}
