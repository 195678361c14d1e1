//! `replay bench apply`: the real `replay apply` binary over a plan of every
//! ledger row (fresh pg_dump, audit, chunked reset and confirmed republish
//! all included) with two real workers running (a leader and a standby),
//! next to a raw baseline in the same run: the same rows made due by one
//! UPDATE the clock does not see, the same messages published by a raw lapin
//! publish-with-confirms loop, processed by the same workers. Both are timed
//! to the last confirm and to the last row processed. Then the brake: `replay
//! pause` issued every few seconds during a second apply of the same plan
//! size (each pause stops it, the bench resumes and re-runs it), and with the
//! workers idle. And the runbook's loop (one `psql` UPDATE and one fresh
//! broker connection and publish per event) on a sample.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::BasicProperties;
use sqlx::PgPool;

use crate::config::Endpoints;
use crate::replay::plan::PlanId;
use crate::wire::envelope::Event;
use crate::wire::transport;

use super::*;

/// Events the runbook's loop is timed on (it is slow; the rate extrapolates).
const RUNBOOK_SAMPLE: usize = 100;
/// Pauses issued with the workers idle.
const IDLE_PAUSES: usize = 20;
/// Before the first pause during the apply; each later attempt runs this
/// much longer before its pause, so the apply gets past its backup (taken
/// again after a pause that stopped it) and finishes.
const PAUSE_EVERY: Duration = Duration::from_secs(3);
/// Pauses during the apply, at most; then it runs to the end.
const MAX_PAUSES: u32 = 8;
/// How often the workers' sessions are looked at for lock waits.
const LOCK_SAMPLE: Duration = Duration::from_millis(20);
/// The `application_name` the bench's workers connect with.
const WORKER_SESSION: &str = "replay-bench-worker";

/// A publish timed to its last confirm and to the last row processed.
#[derive(Debug, Clone, Copy)]
pub struct EndToEnd {
    pub published: Drain,
    pub processed: Drain,
}

/// A pause during the apply: in which phase, how long until every worker
/// reported paused (its own figure), and the command's wall time.
#[derive(Debug, Clone)]
pub struct PauseSample {
    pub phase: &'static str,
    pub latency_ms: u64,
    pub command_ms: u64,
}

/// What `replay bench apply` prints.
pub struct ApplyReport {
    pub events: usize,
    pub raw: EndToEnd,
    pub apply: EndToEnd,
    /// Apply's own timing of each step: backup, reset, publish (the last
    /// two side by side), and the reset chunks' p99 and longest.
    pub apply_steps: [f64; 5],
    pub apply_peak_rss_kib: u64,
    pub backup_bytes: u64,
    pub during_apply: Vec<PauseSample>,
    pub idle: Vec<PauseSample>,
    pub runbook: Drain,
    /// The longest a worker session was seen waiting on a lock, during the
    /// raw baseline and during the apply.
    pub worker_lock_wait: (Duration, Duration),
}

impl std::fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = |f: &mut std::fmt::Formatter<'_>, name: &str, d: &Drain| {
            writeln!(f, "{name:<66} {:>8} events in {:>7.2} s = {:>8.0} events/s", d.events, d.seconds, d.rate())
        };
        writeln!(f, "{} ledger rows, two workers running (leader + standby):", self.events)?;
        line(f, "  raw publish (lapin, confirms in windows of 1000), to last confirm:", &self.raw.published)?;
        line(f, "  raw publish, to last row processed by the workers:", &self.raw.processed)?;
        line(f, "  replay apply (pg_dump + audit + reset + republish), to exit:", &self.apply.published)?;
        line(f, "  replay apply, to last row processed by the workers:", &self.apply.processed)?;
        let [backup, reset, publish, p99, longest] = self.apply_steps;
        writeln!(
            f,
            "    steps: backup {backup:.2} s, then reset {reset:.2} s with the republish {publish:.2} s right behind it"
        )?;
        writeln!(
            f,
            "    reset transactions: p99 {:.0} ms, longest {:.0} ms (the longest a worker can wait on a reset row's lock; target <= 100 ms)",
            p99 * 1000.0,
            longest * 1000.0
        )?;
        writeln!(
            f,
            "    apply peak RSS {:.1} MiB (target <= 64 MiB); backup {:.1} MiB",
            self.apply_peak_rss_kib as f64 / 1024.0,
            self.backup_bytes as f64 / 1_048_576.0
        )?;
        writeln!(
            f,
            "    longest lock wait of a worker session: {} ms during the apply, {} ms during the raw baseline (sampled every {} ms; target <= 100 ms)",
            self.worker_lock_wait.1.as_millis(),
            self.worker_lock_wait.0.as_millis(),
            LOCK_SAMPLE.as_millis()
        )?;
        line(f, "  runbook loop (psql UPDATE + new connection publish per event):", &self.runbook)?;
        for sample in &self.during_apply {
            writeln!(
                f,
                "  pause during the apply's {:<8} {:>5} ms (command {} ms)",
                sample.phase, sample.latency_ms, sample.command_ms
            )?;
        }
        let ratio = self.apply.published.rate() / self.raw.published.rate().max(f64::EPSILON);
        let end_to_end = self.apply.processed.rate() / self.raw.processed.rate().max(f64::EPSILON);
        writeln!(f, "ratio: apply / raw publish = {ratio:.2} (to the last confirm; target >= 0.70)")?;
        writeln!(f, "ratio: apply / raw publish, end to end = {end_to_end:.2} (to the last row processed)")?;
        writeln!(f, "ratio: runbook loop / raw publish = {:.3}", self.runbook.rate() / self.raw.published.rate())?;
        let (p50, p99) = percentiles(&self.during_apply);
        writeln!(f, "pause latency during the apply: p50 {p50} ms, p99 {p99} ms (target p99 < 1000 ms)")?;
        let (p50, p99) = percentiles(&self.idle);
        writeln!(
            f,
            "pause latency, workers idle ({} pauses): p50 {p50} ms, p99 {p99} ms (target p99 <= 250 ms)",
            self.idle.len()
        )
    }
}

/// p50 and p99 (nearest rank) of the samples' latencies.
fn percentiles(samples: &[PauseSample]) -> (u64, u64) {
    let mut ms: Vec<u64> = samples.iter().map(|s| s.latency_ms).collect();
    ms.sort_unstable();
    let rank = |p: f64| ms.get(((p * ms.len() as f64).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0);
    (rank(0.50), rank(0.99))
}

/// `replay bench apply`.
pub async fn run(endpoints: &Endpoints, events: usize, keep: bool, exe: &Path) -> anyhow::Result<ApplyReport> {
    let (scratch, names) = scratch(endpoints, "apply").await?;
    let result = measure_apply(&names, &scratch.pool, events, exe).await;
    finish(endpoints, scratch, &names, keep).await?;
    result
}

async fn measure_apply(names: &Endpoints, pool: &PgPool, events: usize, exe: &Path) -> anyhow::Result<ApplyReport> {
    seed_applicable(pool, events).await?;
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM processed_events ORDER BY id").fetch_all(pool).await?;
    // The very messages apply sends: same bodies, same properties and headers.
    let messages = crate::store::ledger::events(pool, &ids).await?;
    drop(ids);
    let work = tempfile::tempdir().context("creating a scratch directory")?;
    let connection = transport::connect(&names.amqp_url, "replay bench").await?;
    let channel = connection.create_channel().await?;
    transport::declare(&channel, &names.exchange, &names.queue).await?;

    eprintln!("runbook loop over {RUNBOOK_SAMPLE} events…");
    let runbook = runbook_loop(names, &messages[..RUNBOOK_SAMPLE.min(messages.len())]).await?;
    channel.queue_purge(names.queue.as_str().into(), Default::default()).await?;
    back_to_processed(pool).await?;

    // The workers' sessions are named, so their lock waits can be watched.
    let mut worker_url = url::Url::parse(names.database_url.expose()).context("DATABASE_URL is not a URL")?;
    worker_url.query_pairs_mut().append_pair("application_name", WORKER_SESSION);
    let mut workers = Vec::new();
    for id in ["bench-w1", "bench-w2"] {
        let mut worker = command(exe, names, &["worker", "--id", id, "--http", "off"]);
        workers.push(worker.env("DATABASE_URL", worker_url.as_str()).spawn()?);
    }
    let live = "SELECT count(*) FROM replay_control.worker_heartbeats WHERE worker_id LIKE 'bench-w%' AND state IN ('running', 'standby')";
    wait_for(pool, live, 2).await?;

    eprintln!("raw publish of {events} events, processed by the workers…");
    let plan = PlanId::random();
    sqlx::query("UPDATE processed_events SET status = 'pending', processed_at = NULL, replay_plan = $1, next_attempt_at = now() + interval '1 hour'")
        .bind(plan.as_uuid())
        .execute(pool)
        .await?;
    // As the apply's reset does (ledger::refresh_statistics).
    crate::store::ledger::refresh_statistics(pool).await?;
    let started = Instant::now();
    let watching = LockWaits::watch(pool.clone());
    let published = raw_publish(names, &messages, plan).await?;
    let raw = EndToEnd { published, processed: processed_by(pool, events, started).await? };
    let raw_lock_wait = watching.stop().await;
    drop(messages);
    back_to_processed(pool).await?;

    eprintln!("replay apply of a {events}-row plan, processed by the workers…");
    let plan = plan_all(exe, names, &work.path().join("plans")).await?;
    let backups = work.path().join("backups");
    let backups_arg = backups.display().to_string();
    let apply_args = ["apply", &plan, "--yes", "--json", "--operator", "bench", "--backup-dir", &backups_arg];
    let started = Instant::now();
    let watching = LockWaits::watch(pool.clone());
    let child = command(exe, names, &apply_args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let (out, apply_peak_rss_kib) = wait_with_peak_rss(child).await?;
    anyhow::ensure!(out.status.success(), "replay apply failed: {}", String::from_utf8_lossy(&out.stderr));
    let published = Drain { events, seconds: started.elapsed().as_secs_f64() };
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).context("apply printed no outcome")?;
    let step = |name: &str| outcome["steps"][name].as_f64().unwrap_or(0.0);
    let apply_steps =
        [step("backup"), step("reset"), step("publish"), step("reset_chunk_p99"), step("longest_reset_chunk")];
    let apply = EndToEnd { published, processed: processed_by(pool, events, started).await? };
    let apply_lock_wait = watching.stop().await;
    let backup_bytes = dir_bytes(&backups);
    clear_backups(&backups);
    back_to_processed(pool).await?;

    eprintln!("replay pause during a second apply, after 3 s, then 6 s, 9 s… of each re-run…");
    let plan = plan_all(exe, names, &work.path().join("plans")).await?;
    let apply_args = ["apply", &plan, "--yes", "--json", "--operator", "bench", "--backup-dir", &backups_arg];
    let mut during_apply = Vec::new();
    for attempt in 1.. {
        let mut child = command(exe, names, &apply_args).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        let before_pause = if attempt > MAX_PAUSES { Duration::from_secs(86_400) } else { PAUSE_EVERY * attempt };
        let exited = tokio::select! {
            status = child.wait() => Some(status?),
            _ = tokio::time::sleep(before_pause) => None,
        };
        match exited {
            Some(status) if status.success() => break,
            Some(status) => anyhow::bail!("replay apply failed ({status}) before any pause: the benchmark is void"),
            None => {
                let phase = phase(pool).await?;
                during_apply.push(pause(exe, names, phase).await?);
                let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
                    .await
                    .context("the paused apply did not stop within 30 s")??;
                anyhow::ensure!(status.code() == Some(4) || status.success(), "the paused apply exited {status}");
                replay(exe, names, &["resume", "--reason", "bench"]).await?;
                if status.success() {
                    break;
                }
            }
        }
    }
    processed_by(pool, events, Instant::now()).await?;
    clear_backups(&backups);

    eprintln!("replay pause {IDLE_PAUSES} times with the workers idle…");
    let mut idle = Vec::with_capacity(IDLE_PAUSES);
    for _ in 0..IDLE_PAUSES {
        wait_for(pool, live, 2).await?;
        idle.push(pause(exe, names, "idle").await?);
        replay(exe, names, &["resume", "--reason", "bench"]).await?;
    }
    for mut worker in workers {
        let _ = worker.kill().await;
    }
    let _ = transport::answer("close a channel", channel.close(200, "bench done".into())).await;
    transport::close(&connection, "bench done").await;
    Ok(ApplyReport {
        events,
        raw,
        apply,
        apply_steps,
        apply_peak_rss_kib,
        backup_bytes,
        during_apply,
        idle,
        runbook,
        worker_lock_wait: (raw_lock_wait, apply_lock_wait),
    })
}

/// Watches the workers' sessions for lock waits until stopped: a session
/// seen waiting on a lock in the same statement (same `query_start`) at two
/// looks waited at least the time between them.
struct LockWaits {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Duration>,
}

impl LockWaits {
    fn watch(pool: PgPool) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut seen: std::collections::HashMap<(i32, chrono::DateTime<chrono::Utc>), Instant> = Default::default();
            let mut longest = Duration::ZERO;
            while !stopped.is_cancelled() {
                let waiting: Vec<(i32, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
                    "SELECT pid, query_start FROM pg_stat_activity
                      WHERE application_name = $1 AND wait_event_type = 'Lock' AND query_start IS NOT NULL",
                )
                .bind(WORKER_SESSION)
                .fetch_all(&pool)
                .await
                .unwrap_or_default();
                let now = Instant::now();
                seen.retain(|key, _| waiting.contains(key));
                for key in waiting {
                    let since = *seen.entry(key).or_insert(now);
                    longest = longest.max(now - since);
                }
                tokio::select! {
                    _ = tokio::time::sleep(LOCK_SAMPLE) => {}
                    _ = stopped.cancelled() => {}
                }
            }
            longest
        });
        Self { stop, task }
    }

    async fn stop(self) -> Duration {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}

/// Every row processed again and no row parked, as after planning from a
/// clean ledger; the bloat of the last rewrite vacuumed away so it does not
/// slow the next measurement, and the statistics those of a settled ledger.
async fn back_to_processed(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE processed_events SET status = 'processed', processed_at = now(), next_attempt_at = now(), replay_plan = NULL
          WHERE status <> 'processed' OR replay_plan IS NOT NULL",
    )
    .execute(pool)
    .await?;
    sqlx::query("VACUUM ANALYZE processed_events").execute(pool).await?;
    Ok(())
}

/// Waits until no row is pending or processing, then times the drain from `started`.
pub(super) async fn processed_by(pool: &PgPool, events: usize, started: Instant) -> anyhow::Result<Drain> {
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let open: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM processed_events WHERE status IN ('pending', 'processing'))",
        )
        .fetch_one(pool)
        .await?;
        if !open {
            return Ok(Drain { events, seconds: started.elapsed().as_secs_f64() });
        }
        anyhow::ensure!(Instant::now() < deadline, "the workers did not process {events} rows in 30 minutes");
        // The look walks the due-rows index past the entries of rows
        // processed since the last vacuum: not often, or it slows the workers.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Which phase the apply is in, by its run record.
async fn phase(pool: &PgPool) -> anyhow::Result<&'static str> {
    // The first apply's run is done; the second's exists once its backup is.
    let state: Option<String> = sqlx::query_scalar(
        "SELECT state FROM replay_control.replay_runs WHERE state IN ('resetting', 'publishing') LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(match state.as_deref() {
        None => "backup",
        Some("resetting") => "reset",
        _ => "republish",
    })
}

/// `replay pause --json`, timed.
async fn pause(exe: &Path, names: &Endpoints, phase: &'static str) -> anyhow::Result<PauseSample> {
    let started = Instant::now();
    let out = replay(exe, names, &["pause", "--reason", "bench", "--operator", "bench", "--json"]).await?;
    let command_ms = started.elapsed().as_millis() as u64;
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).context("pause printed no answer")?;
    anyhow::ensure!(
        answer["workers_still_running"].as_array().is_some_and(Vec::is_empty),
        "a worker did not pause: {answer}"
    );
    Ok(PauseSample { phase, latency_ms: answer["latency_ms"].as_u64().unwrap_or(0), command_ms })
}

/// Waits for a child, reading its peak RSS (VmHWM) while it runs.
pub(super) async fn wait_with_peak_rss(
    mut child: tokio::process::Child,
) -> anyhow::Result<(std::process::Output, u64)> {
    let pid = child.id().context("apply exited at once")?;
    let mut stdout = child.stdout.take().context("apply's stdout")?;
    let mut stderr = child.stderr.take().context("apply's stderr")?;
    let read = async {
        use tokio::io::AsyncReadExt;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (a, b) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        a?;
        b?;
        Ok::<_, std::io::Error>((out, err))
    };
    tokio::pin!(read);
    let mut peak = 0;
    let (out, err) = loop {
        tokio::select! {
            done = &mut read => break done?,
            _ = tokio::time::sleep(Duration::from_millis(100)) => peak = peak.max(proc_status_kib(pid, "VmHWM:")),
        }
    };
    peak = peak.max(proc_status_kib(pid, "VmHWM:"));
    let status = child.wait().await?;
    Ok((std::process::Output { status, stdout: out, stderr: err }, peak))
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

fn clear_backups(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

/// The raw loop: one connection, confirm mode, windows of 1000 confirms, the
/// same messages apply publishes (bodies, properties, and the replay header
/// of `plan`) built before the clock starts.
async fn raw_publish(names: &Endpoints, messages: &[Event], plan: PlanId) -> anyhow::Result<Drain> {
    let connection = transport::connect(&names.amqp_url, "replay bench raw publisher").await?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let properties: Vec<BasicProperties> =
        messages.iter().map(|e| Event { replay_plan: Some(plan), ..e.clone() }.properties()).collect();
    let started = Instant::now();
    for (window, properties) in messages.chunks(1000).zip(properties.chunks(1000)) {
        let mut confirms = Vec::with_capacity(window.len());
        for (event, properties) in window.iter().zip(properties) {
            let confirm = channel
                .basic_publish(
                    names.exchange.as_str().into(),
                    event.event_type.as_str().into(),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    event.payload_json.as_bytes(),
                    properties.clone(),
                )
                .await?;
            confirms.push(confirm);
        }
        for confirm in futures::future::try_join_all(confirms).await? {
            anyhow::ensure!(confirm.is_ack(), "the broker did not confirm a raw publish");
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    transport::close(&connection, "raw publish done").await;
    Ok(Drain { events: messages.len(), seconds })
}

/// The runbook's loop: per event, a `psql` UPDATE and a publish over a new
/// connection (what `rabbitmqadmin publish` amounts to).
async fn runbook_loop(names: &Endpoints, messages: &[Event]) -> anyhow::Result<Drain> {
    let env = crate::store::backup::libpq_env(&names.database_url)?;
    let started = Instant::now();
    for event in messages {
        let event_id = &event.event_id;
        // psql interpolates :'id' (quoted) only in scripts, so the statement goes on stdin.
        let mut psql = tokio::process::Command::new("psql")
            .args(["-q", "-v", "ON_ERROR_STOP=1", "-v", &format!("id={event_id}")])
            .envs(env.clone())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .context("running psql (the runbook's loop needs the PostgreSQL client)")?;
        if let Some(mut stdin) = psql.stdin.take() {
            use tokio::io::AsyncWriteExt;
            stdin.write_all(b"UPDATE processed_events SET status = 'pending' WHERE event_id = :'id';\n").await?;
        }
        let status = psql.wait().await?;
        anyhow::ensure!(status.success(), "psql failed in the runbook loop");
        let connection = transport::connect(&names.amqp_url, "replay bench runbook").await?;
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        channel
            .basic_publish(
                names.exchange.as_str().into(),
                event.event_type.as_str().into(),
                BasicPublishOptions::default(),
                event.payload_json.as_bytes(),
                event.properties(),
            )
            .await?
            .await?;
        transport::close(&connection, "published").await;
    }
    Ok(Drain { events: messages.len(), seconds: started.elapsed().as_secs_f64() })
}
