//! `replay bench stop`: the real `replay emergency-stop --backup` with two
//! worker processes running (its pause latency included), next to a plain
//! `pg_restore --clean --single-transaction` of the same dump.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use sqlx::PgPool;

use crate::config::Endpoints;

use super::*;

/// What `replay bench stop` prints.
pub struct StopReport {
    pub rows: usize,
    /// (plain pg_restore, emergency stop, pause latency) per round.
    pub rounds: Vec<(Drain, Drain, Duration)>,
}

impl std::fmt::Display for StopReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (round, (restore, stop, latency)) in self.rounds.iter().enumerate() {
            writeln!(f, "round {}:", round + 1)?;
            writeln!(f, "  plain pg_restore --clean --single-transaction:  {:>6.2} s", restore.seconds)?;
            writeln!(
                f,
                "  replay emergency-stop --backup (2 workers):     {:>6.2} s  (pause latency {} ms)",
                stop.seconds,
                latency.as_millis()
            )?;
        }
        let ratio = median(self.rounds.iter().map(|(restore, stop, _)| stop.seconds / restore.seconds).collect());
        let latency = median(self.rounds.iter().map(|(_, _, l)| l.as_secs_f64() * 1000.0).collect());
        writeln!(f, "ledger rows: {}", self.rows)?;
        writeln!(
            f,
            "ratio: emergency stop / plain restore = {ratio:.2} (median of {} rounds; target <= 1.5)",
            self.rounds.len()
        )?;
        writeln!(f, "pause latency: {latency:.0} ms (median; target < 1000 ms)")
    }
}

/// `replay bench stop`.
pub async fn run(endpoints: &Endpoints, rows: usize, keep: bool, exe: &Path) -> anyhow::Result<StopReport> {
    let (scratch, names) = scratch(endpoints, "stop").await?;
    let result = measure_stop(&names, &scratch.pool, rows, exe).await;
    finish(endpoints, scratch, &names, keep).await?;
    result
}

async fn measure_stop(names: &Endpoints, pool: &PgPool, rows: usize, exe: &Path) -> anyhow::Result<StopReport> {
    eprintln!("seeding {rows} ledger rows…");
    seed(pool, rows).await?;
    let work = tempfile::tempdir().context("creating a scratch directory")?;
    let dump = work.path().join("pre.dump");
    let dump_arg = dump.display().to_string();
    replay(exe, names, &["backup", "--out", &dump_arg]).await?;
    let mut workers = Vec::new();
    for id in ["bench-w1", "bench-w2"] {
        workers.push(command(exe, names, &["worker", "--id", id, "--http", "off"]).spawn()?);
    }
    let running =
        "SELECT count(*) FROM replay_control.worker_heartbeats WHERE state = 'running' AND worker_id LIKE 'bench-w%'";
    let env = crate::store::backup::libpq_env(&names.database_url)?;
    let database = env.iter().find(|(k, _)| *k == "PGDATABASE").map(|(_, v)| v.clone()).unwrap_or_default();
    let mut rounds = Vec::with_capacity(ROUNDS);
    for round in 1..=ROUNDS {
        wait_for(pool, running, 2).await?;
        eprintln!("round {round}/{ROUNDS}: plain pg_restore…");
        let started = Instant::now();
        let status = tokio::process::Command::new("pg_restore")
            .args(["--clean", "--if-exists", "--single-transaction", "--no-owner", "--dbname", &database])
            .arg(&dump)
            .envs(env.clone())
            .status()
            .await?;
        anyhow::ensure!(status.success(), "pg_restore failed: the benchmark is void");
        let restore = Drain { events: rows, seconds: started.elapsed().as_secs_f64() };

        eprintln!("round {round}/{ROUNDS}: replay emergency-stop…");
        let started = Instant::now();
        let out =
            replay(exe, names, &["emergency-stop", "--backup", &dump_arg, "--reason", "bench", "--yes", "--json"])
                .await?;
        let stop = Drain { events: rows, seconds: started.elapsed().as_secs_f64() };
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let latency = Duration::from_millis(report["pause"]["latency_ms"].as_u64().unwrap_or(0));
        anyhow::ensure!(
            report["pause"]["workers_paused"].as_array().map_or(0, Vec::len) == 2,
            "the stop did not see both workers paused: the benchmark is void"
        );
        replay(exe, names, &["resume", "--reason", "bench"]).await?;
        rounds.push((restore, stop, latency));
    }
    for mut worker in workers {
        let _ = worker.kill().await;
    }
    Ok(StopReport { rows, rounds })
}
