//! `replay bench rehearse`: the real `replay rehearse` binary over a plan of
//! every ledger row (the fingerprint, a fresh pg_dump restored into a
//! migrated scratch database, the reset, every row through the worker's
//! pipeline, both snapshots and the comparison, the report kept), next to
//! the real `replay apply` of the same plan in the same run, timed to the
//! last row processed by two real workers (a leader and a standby): what
//! the rehearsal costs against the replay it rehearses.

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use anyhow::Context;
use sqlx::PgPool;

use crate::config::Endpoints;
use crate::wire::transport;

use super::apply::{processed_by, wait_with_peak_rss};
use super::*;

/// What `replay bench rehearse` prints.
#[derive(Debug, Clone)]
pub struct RehearseReport {
    pub events: usize,
    /// `replay rehearse PLAN`, to its exit.
    pub rehearsal: Drain,
    pub rehearsal_peak_rss_kib: u64,
    /// The rows the rehearsal's pipeline processed (every one, or the bench is void).
    pub rehearsed_processed: i64,
    /// The rehearsal's own step times (`"steps"` of its `--json`).
    pub rehearsal_steps: serde_json::Value,
    /// `replay apply PLAN --yes`, to its exit and to the last row processed.
    pub applied: Drain,
    pub processed: Drain,
}

impl std::fmt::Display for RehearseReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = |f: &mut std::fmt::Formatter<'_>, name: &str, d: &Drain| {
            writeln!(f, "{name:<70} {:>8} rows in {:>7.2} s = {:>8.0} rows/s", d.events, d.seconds, d.rate())
        };
        writeln!(f, "a plan of {} ledger rows:", self.events)?;
        line(f, "  replay rehearse (fingerprint, dump, restore, reset, apply, compare):", &self.rehearsal)?;
        writeln!(
            f,
            "    rehearsal peak RSS {:.1} MiB; {} of {} rows processed in the scratch database",
            self.rehearsal_peak_rss_kib as f64 / 1024.0,
            self.rehearsed_processed,
            self.events
        )?;
        let step = |name: &str| self.rehearsal_steps[name].as_f64().unwrap_or(0.0);
        writeln!(
            f,
            "    steps: checks {:.2} s, dump {:.2} s, scratch database {:.2} s, restore {:.2} s, reset {:.2} s, apply {:.2} s, compare {:.2} s",
            step("checks"), step("dump"), step("scratch"), step("restore"), step("reset"), step("apply"), step("compare")
        )?;
        line(f, "  replay apply (pg_dump + audit + reset + republish), to exit:", &self.applied)?;
        line(f, "  replay apply, to last row processed by two workers:", &self.processed)?;
        writeln!(
            f,
            "ratio: rehearsal time / apply time = {:.2} (apply to the last row processed; to its exit {:.2})",
            self.rehearsal.seconds / self.processed.seconds.max(f64::EPSILON),
            self.rehearsal.seconds / self.applied.seconds.max(f64::EPSILON)
        )
    }
}

pub async fn run(endpoints: &Endpoints, events: usize, keep: bool, exe: &Path) -> anyhow::Result<RehearseReport> {
    let (scratch, names) = scratch(endpoints, "rehearse").await?;
    let result = measure(&names, &scratch.pool, events, exe).await;
    finish(endpoints, scratch, &names, keep).await?;
    result
}

async fn measure(names: &Endpoints, pool: &PgPool, events: usize, exe: &Path) -> anyhow::Result<RehearseReport> {
    seed_applicable(pool, events).await?;
    let work = tempfile::tempdir().context("creating a scratch directory")?;
    let plan = plan_all(exe, names, &work.path().join("plans")).await?;

    eprintln!("replay rehearse of a {events}-row plan…");
    let started = Instant::now();
    let child =
        command(exe, names, &["rehearse", &plan, "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let (out, rehearsal_peak_rss_kib) = wait_with_peak_rss(child).await?;
    anyhow::ensure!(out.status.success(), "replay rehearse failed: {}", String::from_utf8_lossy(&out.stderr));
    let rehearsal = Drain { events, seconds: started.elapsed().as_secs_f64() };
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).context("rehearse printed no report")?;
    let rehearsed_processed = report["ledger"]["processed"].as_i64().unwrap_or(0);
    let rehearsal_steps = report["steps"].clone();
    anyhow::ensure!(
        rehearsed_processed == events as i64,
        "the rehearsal processed {rehearsed_processed} of {events} rows: the benchmark is void"
    );

    let connection = transport::connect(&names.amqp_url, "replay bench").await?;
    let channel = connection.create_channel().await?;
    transport::declare(&channel, &names.exchange, &names.queue).await?;
    let mut workers = Vec::new();
    for id in ["bench-w1", "bench-w2"] {
        workers.push(command(exe, names, &["worker", "--id", id, "--http", "off"]).spawn()?);
    }
    let live = "SELECT count(*) FROM replay_control.worker_heartbeats WHERE worker_id LIKE 'bench-w%' AND state IN ('running', 'standby')";
    wait_for(pool, live, 2).await?;

    eprintln!("replay apply of the same plan, processed by the workers…");
    let backups = work.path().join("backups").display().to_string();
    let started = Instant::now();
    let out = replay(exe, names, &["apply", &plan, "--yes", "--json", "--operator", "bench", "--backup-dir", &backups])
        .await?;
    drop(out);
    let applied = Drain { events, seconds: started.elapsed().as_secs_f64() };
    let processed = processed_by(pool, events, started).await?;
    for mut worker in workers {
        let _ = worker.kill().await;
    }
    let _ = transport::answer("close a channel", channel.close(200, "bench done".into())).await;
    transport::close(&connection, "bench done").await;
    Ok(RehearseReport {
        events,
        rehearsal,
        rehearsal_peak_rss_kib,
        rehearsed_processed,
        rehearsal_steps,
        applied,
        processed,
    })
}
