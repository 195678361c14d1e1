//! `replay bench stop`: the real `replay emergency-stop --backup` with two
//! worker processes running (its pause latency included), next to a plain
//! `pg_restore --clean --single-transaction` of the same dump; with
//! `--queued N`, the real `replay emergency-stop --no-restore` taking a deep
//! queue (its wall time and peak RSS), next to a raw consume of the same
//! queue contents.

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

/// Replay messages queued with every [`FILL_CHUNK`] legitimate ones.
const REPLAY_PER_CHUNK: usize = 100;
/// Legitimate messages published per confirmed window of the fill.
const FILL_CHUNK: usize = 10_000;
/// The peak RSS the stop must stay under, whatever the depth.
const RSS_TARGET_MIB: f64 = 64.0;

/// What `replay bench stop --queued N` prints.
pub struct QueuedReport {
    /// Legitimate messages queued.
    pub queued: usize,
    /// Replay messages queued among them.
    pub replay: usize,
    /// `replay emergency-stop --no-restore`, process start to exit.
    pub stop_seconds: f64,
    /// The stop's peak RSS (VmHWM, read while it ran).
    pub stop_peak_rss_kib: u64,
    /// A plain consumer taking the same queue contents, no database.
    pub raw_seconds: f64,
}

impl std::fmt::Display for QueuedReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let peak = self.stop_peak_rss_kib as f64 / 1024.0;
        writeln!(
            f,
            "emergency stop over {} queued (+{} replay): {:.1} s, peak RSS {peak:.0} MiB (target <= {RSS_TARGET_MIB:.0} MiB)",
            self.queued, self.replay, self.stop_seconds
        )?;
        writeln!(
            f,
            "raw consume of the same queue (prefetch {}, batches of {}, ack multiple, no database): {:.1} s",
            crate::control::emergency::TAKE_PREFETCH,
            crate::control::emergency::TAKE_BATCH,
            self.raw_seconds
        )?;
        writeln!(
            f,
            "ratio: emergency stop / raw consume = {:.2}",
            self.stop_seconds / self.raw_seconds.max(f64::EPSILON)
        )
    }
}

/// `replay bench stop --queued N`: the real `replay emergency-stop
/// --no-restore` over `queued` legitimate messages and some replay's, then a
/// raw consume of the same queue filled the same way.
pub async fn run_queued(endpoints: &Endpoints, queued: usize, keep: bool, exe: &Path) -> anyhow::Result<QueuedReport> {
    let (scratch, names) = scratch(endpoints, "stopq").await?;
    let result = measure_queued(&names, &scratch.pool, queued, exe).await;
    finish(endpoints, scratch, &names, keep).await?;
    result
}

async fn measure_queued(names: &Endpoints, pool: &PgPool, queued: usize, exe: &Path) -> anyhow::Result<QueuedReport> {
    let period = uuid::Uuid::new_v4();
    eprintln!("queueing {queued} legitimate messages and a replay's…");
    let replay = fill_queued(names, period, queued).await?;
    let work = tempfile::tempdir().context("creating a scratch directory")?;
    eprintln!("replay emergency-stop --no-restore…");
    let (stop_seconds, stop_peak_rss_kib, report) = timed_stop(exe, names, work.path()).await?;
    anyhow::ensure!(
        report["kept_messages"] == queued && report["purged_replay_messages"] == replay,
        "the stop kept {} and dropped {} of {queued} and {replay}: the benchmark is void",
        report["kept_messages"],
        report["purged_replay_messages"]
    );
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE status = 'pending'").fetch_one(pool).await?;
    anyhow::ensure!(pending as usize == queued, "the ledger holds {pending} pending rows, not {queued}: void");

    eprintln!("queueing the same again for the raw consume…");
    fill_queued(names, period, queued).await?;
    let raw_seconds = raw_consume(names, queued + replay).await?;
    Ok(QueuedReport { queued, replay, stop_seconds, stop_peak_rss_kib, raw_seconds })
}

/// Publishes `queued` contribution events in confirmed windows, each
/// followed by [`REPLAY_PER_CHUNK`] messages of a replay; returns how many
/// replay messages were queued. Built window by window, so the bench holds
/// one window in memory, not the queue.
async fn fill_queued(names: &Endpoints, period: uuid::Uuid, queued: usize) -> anyhow::Result<usize> {
    let connection = transport::connect(&names.amqp_url, "replay bench publisher").await?;
    let channel = connection.create_channel().await?;
    transport::declare(&channel, &names.exchange, &names.queue).await?;
    let publisher = crate::wire::publisher::Publisher::new(channel, &names.exchange).await?;
    let plan = crate::replay::plan::PlanId::random();
    let (mut done, mut replay) = (0, 0);
    while done < queued {
        let n = (queued - done).min(FILL_CHUNK);
        publisher.publish_all(&super::worker::contributions(period, n)?, |_| {}).await?;
        let replayed: Vec<_> = super::worker::contributions(period, REPLAY_PER_CHUNK)?
            .into_iter()
            .map(|e| crate::wire::envelope::Event { replay_plan: Some(plan), ..e })
            .collect();
        publisher.publish_all(&replayed, |_| {}).await?;
        done += n;
        replay += replayed.len();
    }
    transport::close(&connection, "filled").await;
    drop(publisher);
    Ok(replay)
}

/// Runs the stop as a child, reading its peak RSS while it runs; returns
/// its wall time, that peak and its JSON report.
async fn timed_stop(exe: &Path, names: &Endpoints, dir: &Path) -> anyhow::Result<(f64, u64, serde_json::Value)> {
    use tokio::io::AsyncReadExt;
    let dir = dir.display().to_string();
    let args = ["emergency-stop", "--no-restore", "--reason", "bench", "--yes", "--json", "--report-dir", &dir];
    let started = Instant::now();
    let mut child = command(exe, names, &args).stdout(std::process::Stdio::piped()).spawn()?;
    let pid = child.id().context("the stop exited at once")?;
    let mut peak = 0;
    let status = loop {
        // VmHWM is the peak so far; read until the process is gone.
        peak = peak.max(proc_status_kib(pid, "VmHWM:"));
        if let Some(status) = child.try_wait()? {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_end(&mut out).await?;
    }
    anyhow::ensure!(status.success(), "replay emergency-stop failed ({status}): {}", String::from_utf8_lossy(&out));
    Ok((seconds, peak, serde_json::from_slice(&out)?))
}

/// A plain lapin consumer with the stop's prefetch and batch size, acking
/// each batch multiple, no database: how fast the queue itself hands over.
async fn raw_consume(names: &Endpoints, total: usize) -> anyhow::Result<f64> {
    use futures::{FutureExt, StreamExt};
    let started = Instant::now();
    let connection = transport::connect(&names.amqp_url, "replay bench raw consume").await?;
    let channel = connection.create_channel().await?;
    channel.basic_qos(crate::control::emergency::TAKE_PREFETCH, lapin::options::BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            names.queue.as_str().into(),
            "bench-raw-consume".into(),
            lapin::options::BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await?;
    let mut done = 0;
    while done < total {
        let mut last = consumer.next().await.context("the raw consumer was closed")??.delivery_tag;
        let mut batch = 1;
        while batch < crate::control::emergency::TAKE_BATCH {
            match consumer.next().now_or_never() {
                Some(Some(delivery)) => last = delivery?.delivery_tag,
                _ => break,
            }
            batch += 1;
        }
        channel.basic_ack(last, lapin::options::BasicAckOptions { multiple: true }).await?;
        done += batch;
    }
    let seconds = started.elapsed().as_secs_f64();
    transport::close(&connection, "raw consume done").await;
    Ok(seconds)
}
