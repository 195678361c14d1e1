//! `replay bench …`: every target measured next to a baseline in the same
//! run, on a scratch database and scratch broker names, so the shared
//! machine's noise affects both alike. One file per bench: `worker`
//! (`replay bench`), `apply`, `plan`, `stop`, `console`, `rehearse`, `partitions`; this module holds what they
//! share (the scratch world, the spawned `replay` binary, timing and
//! memory readings).

pub mod apply;
pub mod console;
pub mod partitions;
pub mod plan;
pub mod rehearse;
pub mod stop;
pub mod worker;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use sqlx::PgPool;

use crate::config::Endpoints;
pub(crate) use crate::store::scratch::Scratch;
use crate::wire::transport;

/// One measured drain.
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    pub events: usize,
    pub seconds: f64,
}

impl Drain {
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.seconds.max(f64::EPSILON)
    }
}

/// The middle value (the upper one of an even count).
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Measured rounds; the ratio reported is their median.
const ROUNDS: usize = 3;

pub(crate) fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

pub(crate) async fn cleanup_broker(names: &Endpoints) {
    if let Ok(connection) = transport::connect(&names.amqp_url, "replay bench cleanup").await {
        if let Ok(channel) = connection.create_channel().await {
            for partition in names.partition_list() {
                let queue = partition.queue;
                let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
                let dead_letters = transport::dead_letter_queue(&queue);
                let _ = channel.queue_delete(dead_letters.as_str().into(), QueueDeleteOptions::default()).await;
            }
            if names.partitions > 1 {
                let hash = names.hash_exchange();
                let _ = channel.exchange_delete(hash.as_str().into(), ExchangeDeleteOptions::default()).await;
            }
            let _ = channel.exchange_delete(names.exchange.as_str().into(), ExchangeDeleteOptions::default()).await;
            let _ = transport::answer("close a channel", channel.close(200, "cleaned".into())).await;
        }
        transport::close(&connection, "cleaned").await;
    }
}

/// A scratch database and broker names, dropped when done unless kept.
async fn scratch(endpoints: &Endpoints, prefix: &str) -> anyhow::Result<(Scratch, Endpoints)> {
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let scratch = Scratch::create(&endpoints.database_url, &format!("replay_bench_{prefix}_{suffix}")).await?;
    let names = Endpoints {
        database_url: scratch.url.clone(),
        amqp_url: endpoints.amqp_url.clone(),
        exchange: format!("replay-bench-{suffix}"),
        queue: format!("replay-bench-{suffix}.worker"),
        partitions: 1,
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
        Ok(scratch.drop_database(&endpoints.database_url).await?)
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
                                       'period_id', $3::text, 'type', 'labor',
                                       'amount', i % 90 + 10),
                    timestamptz '2026-01-01' + make_interval(secs => (i * 86400.0 / 50000)),
                    'processed', now()
               FROM generate_series($1::bigint, $2::bigint) i",
        )
        .bind(done as i64)
        .bind((done + n - 1) as i64)
        .bind(PERIOD)
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

/// The period every seeded contribution belongs to (see [`seed`]).
const PERIOD: &str = "00000000-0000-0000-0000-000000000001";

/// [`seed`], and the period its contributions belong to, so a worker
/// (or a rehearsal) applies every row instead of failing it.
async fn seed_applicable(pool: &PgPool, rows: usize) -> anyhow::Result<()> {
    seed(pool, rows).await?;
    sqlx::query(
        "INSERT INTO allocation_periods (id, start_date, end_date, status, opened_at)
         VALUES ($1::uuid, '2026-01-01', '2026-12-31', 'open', now())",
    )
    .bind(PERIOD)
    .execute(pool)
    .await?;
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
        .env("REPLAY_PARTITIONS", names.partitions.to_string())
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
