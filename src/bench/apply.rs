//! `replay bench apply`: the real `replay apply` binary over a plan of every
//! ledger row (fresh pg_dump, audit, reset and confirmed republish all
//! included), next to a raw lapin publish-with-confirms loop of the same
//! messages, and to the runbook's loop (one `psql` UPDATE and one fresh
//! broker connection and publish per event) on a sample.

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use anyhow::Context;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions};
use lapin::BasicProperties;
use sqlx::PgPool;

use crate::config::Endpoints;
use crate::wire::envelope::Event;
use crate::wire::transport;

use super::*;

/// Events the runbook's loop is timed on (it is slow; the rate extrapolates).
const RUNBOOK_SAMPLE: usize = 100;

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
pub async fn run(endpoints: &Endpoints, events: usize, keep: bool, exe: &Path) -> anyhow::Result<ApplyReport> {
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
