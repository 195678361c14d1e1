//! `replay bench apply` and `replay bench plan`: the replay path measured
//! next to raw baselines in the same run, on a scratch database and scratch
//! broker names.
//!
//! - apply: the real `replay apply` binary over a plan of every ledger row
//!   (fresh pg_dump, audit, reset and confirmed republish all included), next
//!   to a raw lapin publish-with-confirms loop of the same messages, and to
//!   the runbook's loop (one `psql` UPDATE and one fresh broker connection
//!   and publish per event) on a sample.
//! - plan: the real `replay plan` binary over the whole ledger and over
//!   10,000 rows of it, with its peak memory, next to a raw streamed read
//!   of the same rows.
//! - stop: the real `replay emergency-stop --backup` with two worker
//!   processes running (its pause latency included), next to a plain
//!   `pg_restore --clean --single-transaction` of the same dump.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::TryStreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions};
use lapin::BasicProperties;
use sqlx::{PgPool, Row};

use super::median;
use super::{cleanup_broker, proc_status_kib, Drain, Scratch};
use crate::config::Endpoints;
use crate::wire::envelope::Event;
use crate::wire::transport;

/// Measured rounds; ratios reported are their medians.
const ROUNDS: usize = 3;
/// Events the runbook's loop is timed on (it is slow; the rate extrapolates).
const RUNBOOK_SAMPLE: usize = 100;

/// A scratch database and broker names, dropped when done unless kept.
async fn scratch(endpoints: &Endpoints, prefix: &str) -> anyhow::Result<(Scratch, Endpoints)> {
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let scratch = Scratch::create(&endpoints.database_url, &format!("replay_bench_{prefix}_{suffix}")).await?;
    let names = Endpoints {
        database_url: scratch.url.clone(),
        amqp_url: endpoints.amqp_url.clone(),
        exchange: format!("replay-bench-{suffix}"),
        queue: format!("replay-bench-{suffix}.worker"),
    };
    Ok((scratch, names))
}

async fn finish(endpoints: &Endpoints, scratch: Scratch, names: &Endpoints, keep: bool) -> anyhow::Result<()> {
    cleanup_broker(names).await;
    scratch.pool.close().await;
    if keep {
        eprintln!("kept scratch database {}", scratch.name);
        Ok(())
    } else {
        scratch.drop_database(&endpoints.database_url).await
    }
}

/// Fills the ledger with `rows` processed contribution events, one day of
/// event time per 50,000 rows, in one statement per 200,000 rows.
async fn seed(pool: &PgPool, rows: usize) -> anyhow::Result<()> {
    let mut done = 0;
    while done < rows {
        let n = (rows - done).min(200_000);
        sqlx::query(
            "INSERT INTO processed_events (event_id, event_type, payload, occurred_at, status, processed_at)
             SELECT gen_random_uuid()::text, 'contribution.submitted',
                    jsonb_build_object('contribution_id', gen_random_uuid(), 'member_id', gen_random_uuid(),
                                       'period_id', '00000000-0000-0000-0000-000000000001', 'type', 'labor',
                                       'amount', i % 90 + 10),
                    timestamptz '2026-01-01' + make_interval(secs => (i * 86400.0 / 50000)),
                    'processed', now()
               FROM generate_series($1::bigint, $2::bigint) i",
        )
        .bind(done as i64)
        .bind((done + n - 1) as i64)
        .execute(pool)
        .await?;
        done += n;
        if rows > 200_000 {
            eprintln!("  seeded {done} of {rows} ledger rows…");
        }
    }
    sqlx::query("VACUUM ANALYZE processed_events").execute(pool).await?;
    Ok(())
}

/// Runs `replay ARGS` against `names` and returns its output, failing on a non-zero exit.
async fn replay(exe: &Path, names: &Endpoints, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let output = command(exe, names, args).output().await.with_context(|| format!("running {}", exe.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "replay {} failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output)
}

fn command(exe: &Path, names: &Endpoints, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(exe);
    command
        .args(args)
        .env("DATABASE_URL", names.database_url.expose())
        .env("AMQP_URL", names.amqp_url.expose())
        .env("REPLAY_EXCHANGE", &names.exchange)
        .env("REPLAY_QUEUE", &names.queue)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Plans every row and returns the plan's path.
async fn plan_all(exe: &Path, names: &Endpoints, dir: &Path) -> anyhow::Result<String> {
    let dir = dir.display().to_string();
    let out = replay(exe, names, &["plan", "--all", "--reason", "bench", "--out-dir", &dir, "--json"]).await?;
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    answer["plan_path"].as_str().map(str::to_string).context("plan printed no path")
}

/// What `replay bench apply` prints.
pub struct ApplyReport {
    /// (raw publish, apply, runbook loop) per round.
    pub rounds: Vec<(Drain, Drain, Drain)>,
    /// Apply's own timing of each step per round: backup, reset, publish
    /// (backup and reset overlap; their longer one comes before publishing).
    pub apply_steps: Vec<[f64; 3]>,
    pub backup_bytes: u64,
}

impl std::fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = |f: &mut std::fmt::Formatter<'_>, name: &str, d: &Drain| {
            writeln!(f, "{name:<62} {:>7} events in {:>7.2} s = {:>8.0} events/s", d.events, d.seconds, d.rate())
        };
        for (round, (raw, apply, runbook)) in self.rounds.iter().enumerate() {
            writeln!(f, "round {}:", round + 1)?;
            line(f, "  raw publish (lapin, confirms in windows of 1000):", raw)?;
            line(f, "  replay apply (pg_dump + audit + reset + confirmed republish):", apply)?;
            if let Some([backup, reset, publish]) = self.apply_steps.get(round) {
                writeln!(
                    f,
                    "    steps: backup {backup:.2} s, reset {reset:.2} s (side by side), republish {publish:.2} s, \
                     the rest (process, checks) {:.2} s",
                    apply.seconds - backup.max(*reset) - publish
                )?;
            }
            line(f, "  runbook loop (psql UPDATE + new connection publish per event):", runbook)?;
        }
        let ratio = median(self.rounds.iter().map(|(raw, apply, _)| apply.rate() / raw.rate()).collect());
        let runbook = median(self.rounds.iter().map(|(raw, _, runbook)| runbook.rate() / raw.rate()).collect());
        writeln!(
            f,
            "ratio: apply / raw publish = {ratio:.2} (median of {} rounds; target >= 0.70)",
            self.rounds.len()
        )?;
        writeln!(f, "ratio: runbook loop / raw publish = {runbook:.3}")?;
        writeln!(f, "backup size per apply: {:.1} MiB", self.backup_bytes as f64 / 1_048_576.0)
    }
}

/// `replay bench apply`.
pub async fn apply(endpoints: &Endpoints, events: usize, keep: bool, exe: &Path) -> anyhow::Result<ApplyReport> {
    let (scratch, names) = scratch(endpoints, "apply").await?;
    let result = measure_apply(&names, &scratch.pool, events, exe).await;
    finish(endpoints, scratch, &names, keep).await?;
    result
}

async fn measure_apply(names: &Endpoints, pool: &PgPool, events: usize, exe: &Path) -> anyhow::Result<ApplyReport> {
    seed(pool, events).await?;
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM processed_events ORDER BY id").fetch_all(pool).await?;
    // The very messages apply sends: same bodies, same properties and headers.
    let messages = crate::store::ledger::events(pool, &ids).await?;
    let work = tempfile::tempdir().context("creating a scratch directory")?;
    let connection = transport::connect(&names.amqp_url, "replay bench").await?;
    let channel = connection.create_channel().await?;
    transport::declare(&channel, &names.exchange, &names.queue).await?;
    let mut rounds = Vec::with_capacity(ROUNDS);
    let mut backup_bytes = 0;
    let mut apply_steps = Vec::with_capacity(ROUNDS);
    for round in 1..=ROUNDS {
        eprintln!("round {round}/{ROUNDS}: raw publish of {events} events…");
        let raw = raw_publish(names, &messages).await?;
        channel.queue_purge(names.queue.as_str().into(), QueuePurgeOptions::default()).await?;

        eprintln!("round {round}/{ROUNDS}: replay apply of a {events}-row plan…");
        let plan = plan_all(exe, names, &work.path().join("plans")).await?;
        let backups = work.path().join(format!("backups-{round}"));
        let backups_arg = backups.display().to_string();
        let started = Instant::now();
        let out = replay(
            exe,
            names,
            &["apply", &plan, "--yes", "--json", "--operator", "bench", "--backup-dir", &backups_arg],
        )
        .await?;
        let apply = Drain { events, seconds: started.elapsed().as_secs_f64() };
        let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).context("apply printed no outcome")?;
        let step = |name: &str| outcome["steps"][name].as_f64().unwrap_or(0.0);
        let steps = [step("backup"), step("reset"), step("publish")];
        let depth = transport::queue_depth(&channel, &names.queue).await? as usize;
        anyhow::ensure!(
            depth == events,
            "apply left {depth} messages in the queue, expected {events}: the benchmark is void"
        );
        backup_bytes = dir_bytes(&backups);
        channel.queue_purge(names.queue.as_str().into(), QueuePurgeOptions::default()).await?;
        // Back to the state planned from: every row processed.
        sqlx::query(
            "UPDATE processed_events SET status = 'processed', processed_at = now(), next_attempt_at = now(), replay_plan = NULL",
        )
        .execute(pool)
        .await?;
        // A ledger is not rewritten whole between two replays: do not let this one's bloat slow the next round.
        sqlx::query("VACUUM processed_events").execute(pool).await?;

        eprintln!("round {round}/{ROUNDS}: runbook loop over {RUNBOOK_SAMPLE} events…");
        let runbook = runbook_loop(names, &messages[..RUNBOOK_SAMPLE.min(messages.len())]).await?;
        channel.queue_purge(names.queue.as_str().into(), QueuePurgeOptions::default()).await?;
        rounds.push((raw, apply, runbook));
        apply_steps.push(steps);
    }
    let _ = transport::answer("close a channel", channel.close(200, "bench done".into())).await;
    transport::close(&connection, "bench done").await;
    Ok(ApplyReport { rounds, apply_steps, backup_bytes })
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

/// The raw loop: one connection, confirm mode, windows of 1000 confirms, the
/// same messages apply publishes (bodies, properties, replay headers) built
/// before the clock starts.
async fn raw_publish(names: &Endpoints, messages: &[Event]) -> anyhow::Result<Drain> {
    let connection = transport::connect(&names.amqp_url, "replay bench raw publisher").await?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let plan = crate::replay::plan::PlanId::random();
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
    let env = crate::control::backup::libpq_env(&names.database_url)?;
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
pub async fn plan(endpoints: &Endpoints, rows: usize, keep: bool, exe: &Path) -> anyhow::Result<PlanReport> {
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
pub async fn stop(endpoints: &Endpoints, rows: usize, keep: bool, exe: &Path) -> anyhow::Result<StopReport> {
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
    let env = crate::control::backup::libpq_env(&names.database_url)?;
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

async fn wait_for(pool: &PgPool, sql: &'static str, expected: i64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(pool).await?;
        if n == expected {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "waited 60 s for the workers to run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
