//! `replay bench`: the worker's end-to-end rate next to a raw baseline
//! measured in the same run, in a scratch database and on scratch broker
//! names, so the shared machine's noise affects both alike.
//!
//! Raw limit: one lapin consumer on the same ordered (quorum, single active
//! consumer) queue → one batched INSERT per batch into a minimal table → one
//! commit → ack multiple; no ledger, no handlers. Worker: the real `replay
//! worker` binary (leader of its partition), spawned as a child process so
//! its memory can be read from /proc. With `--previous-exe`, an earlier
//! binary's worker on the classic queue it declares, for "ordering costs no
//! throughput". Every drain empties a queue filled before the clock starts.
//!
//! Beside the raw limit, the same loop with the domain row the worker must
//! also write (a second INSERT of one row per event, into a table with only
//! its primary key, in the same transaction): the raw limit skips the
//! exactly-once domain effect, so this line shows how much of the gap is
//! that effect and how much the ledger.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use futures::{FutureExt, StreamExt};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde_json::json;
use sqlx::PgPool;

use crate::config::Endpoints;
use crate::wire::envelope::Event;
use crate::wire::publisher::Publisher;
use crate::wire::transport;

use super::*;

/// What `replay bench` prints.
#[derive(Debug, Clone)]
pub struct Report {
    /// One (raw limit, worker) pair per round, measured back to back.
    pub rounds: Vec<(Drain, Drain)>,
    /// The raw limit with a domain row per event, per round.
    pub with_domain_row: Vec<Drain>,
    /// The previous binary's worker on a classic queue, per round, if asked.
    pub previous: Vec<Drain>,
    /// Worker RSS in KiB at 0%, 25%, 50%, 75% and 100% of the drain.
    pub worker_rss_kib: Vec<u64>,
    pub worker_peak_rss_kib: u64,
}

impl Report {
    /// The median over rounds of worker rate / baseline rate.
    pub fn ratio(&self) -> f64 {
        median(self.rounds.iter().map(|(b, w)| w.rate() / b.rate().max(f64::EPSILON)).collect())
    }

    /// The median over rounds of worker rate / previous worker rate.
    pub fn ratio_to_previous(&self) -> Option<f64> {
        self.worker_against(&self.previous)
    }

    /// The median over rounds of worker rate / the raw limit's rate with a
    /// domain row per event.
    pub fn ratio_to_domain_row(&self) -> Option<f64> {
        self.worker_against(&self.with_domain_row)
    }

    fn worker_against(&self, others: &[Drain]) -> Option<f64> {
        (!others.is_empty()).then(|| {
            median(self.rounds.iter().zip(others).map(|((_, w), o)| w.rate() / o.rate().max(f64::EPSILON)).collect())
        })
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = |f: &mut std::fmt::Formatter<'_>, name: &str, d: &Drain| {
            writeln!(f, "{name:<58} {:>7} events in {:>6.2} s = {:>8.0} events/s", d.events, d.seconds, d.rate())
        };
        for (round, (baseline, worker)) in self.rounds.iter().enumerate() {
            writeln!(f, "round {}:", round + 1)?;
            line(f, "  raw limit (quorum SAC: consume -> INSERT -> ack multiple):", baseline)?;
            if let Some(with_row) = self.with_domain_row.get(round) {
                line(f, "  raw limit + a domain row per event (second INSERT):", with_row)?;
            }
            line(f, "  ordered worker (quorum SAC, ledger + handlers):", worker)?;
            if let Some(previous) = self.previous.get(round) {
                line(f, "  previous worker (classic queue, before ordering):", previous)?;
            }
        }
        writeln!(
            f,
            "ratio: ordered worker / raw limit = {:.2} (median of {} rounds; target >= 0.70)",
            self.ratio(),
            self.rounds.len()
        )?;
        if let Some(ratio) = self.ratio_to_domain_row() {
            writeln!(
                f,
                "ratio: ordered worker / raw limit with a domain row = {ratio:.2} (median; what the ledger costs)"
            )?;
        }
        if let Some(ratio) = self.ratio_to_previous() {
            writeln!(f, "ratio: ordered worker / previous worker = {ratio:.2} (median; target >= 1.00)")?;
        }
        let samples: Vec<String> = self.worker_rss_kib.iter().map(|k| format!("{:.1}", *k as f64 / 1024.0)).collect();
        writeln!(
            f,
            "worker RSS MiB at 0/25/50/75/100% of the drain: {} (peak {:.1}; target <= 40)",
            samples.join(" / "),
            self.worker_peak_rss_kib as f64 / 1024.0
        )
    }
}

/// Runs both measurements with `events` events each. `worker_exe` is the
/// `replay` binary to spawn.
pub async fn run(
    endpoints: &Endpoints,
    events: usize,
    keep: bool,
    worker_exe: &Path,
    previous_exe: Option<&Path>,
) -> anyhow::Result<Report> {
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let scratch = Scratch::create(&endpoints.database_url, &format!("replay_bench_{suffix}")).await?;
    let names = Endpoints {
        database_url: scratch.url.clone(),
        amqp_url: endpoints.amqp_url.clone(),
        exchange: format!("replay-bench-{suffix}"),
        queue: format!("replay-bench-{suffix}.worker"),
        partitions: 1,
    };
    let classic = Endpoints {
        exchange: format!("replay-bench-{suffix}-classic"),
        queue: format!("replay-bench-{suffix}-classic.worker"),
        ..names.clone()
    };
    let previous = previous_exe.map(|exe| (exe, &classic));
    let result = measure(&names, &scratch.pool, events, worker_exe, previous).await;
    cleanup_broker(&names).await;
    cleanup_broker(&classic).await;
    scratch.pool.close().await;
    if keep {
        eprintln!("kept scratch database {}", scratch.name);
    } else {
        scratch.drop_database(&endpoints.database_url).await?;
    }
    result
}

async fn measure(
    names: &Endpoints,
    pool: &PgPool,
    count: usize,
    worker_exe: &Path,
    previous: Option<(&Path, &Endpoints)>,
) -> anyhow::Result<Report> {
    create_raw_table(pool).await?;
    let period = uuid::Uuid::new_v4();
    let opened = Event::new(
        uuid::Uuid::new_v4().to_string(),
        "period.opened".into(),
        Utc::now(),
        json!({"period_id": period, "start_date": "2026-01-01", "end_date": "2026-03-31"}),
    )?;
    let mut events = vec![opened];
    events.extend(contributions(period, count)?);

    let mut rounds = Vec::with_capacity(ROUNDS);
    let mut previous_drains = Vec::new();
    let mut with_domain_row = Vec::new();
    let mut memory = (Vec::new(), 0);
    for round in 1..=ROUNDS {
        eprintln!("round {round}/{ROUNDS}: baseline drain of {} events…", events.len());
        fill(names, &events).await?;
        let baseline = baseline_drain(names, pool, events.len(), Baseline::Raw).await?;
        reset(pool).await?;

        eprintln!("round {round}/{ROUNDS}: baseline drain with a domain row per event…");
        fill(names, &events).await?;
        with_domain_row.push(baseline_drain(names, pool, events.len(), Baseline::WithDomainRow).await?);
        reset(pool).await?;

        eprintln!("round {round}/{ROUNDS}: worker drain of {} events…", events.len());
        fill(names, &events).await?;
        let (worker, rss, peak) = worker_drain(names, pool, events.len(), worker_exe).await?;
        let contributions: i64 = sqlx::query_scalar("SELECT count(*) FROM contributions").fetch_one(pool).await?;
        anyhow::ensure!(
            contributions as usize == count,
            "the worker applied {contributions} contributions, expected {count}: the benchmark is void"
        );
        reset(pool).await?;
        if let Some((exe, classic)) = previous {
            eprintln!("round {round}/{ROUNDS}: previous worker drain of {} events (classic queue)…", events.len());
            fill_classic(classic, &events).await?;
            let (drain, _, _) = worker_drain(classic, pool, events.len(), exe).await?;
            reset(pool).await?;
            previous_drains.push(drain);
        }
        rounds.push((baseline, worker));
        memory = (rss, peak);
    }
    Ok(Report {
        rounds,
        with_domain_row,
        previous: previous_drains,
        worker_rss_kib: memory.0,
        worker_peak_rss_kib: memory.1,
    })
}

/// The minimal tables of the raw limit (issue 17): the event id as primary
/// key, its type, its payload and a status, nothing else; and the domain row
/// of [`Baseline::WithDomainRow`], a contribution with its primary key only.
pub(super) async fn create_raw_table(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::raw_sql(
        "CREATE TABLE bench_raw (event_id text PRIMARY KEY, event_type text NOT NULL, payload jsonb NOT NULL,
                                 status text NOT NULL);
         CREATE TABLE bench_raw_domain (id uuid PRIMARY KEY, member_id uuid NOT NULL, period_id uuid NOT NULL,
                                        amount numeric NOT NULL)",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// What the raw loop writes per batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Baseline {
    /// One INSERT into `bench_raw`.
    Raw,
    /// That, and one domain row per event into `bench_raw_domain` in the
    /// same transaction: the least a worker with an exactly-once effect writes.
    WithDomainRow,
}

/// Empties what a drain wrote, so every drain starts from the same state
/// (ledger ids from 1 again: the drains read progress from the newest id).
pub(super) async fn reset(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "TRUNCATE processed_events, contributions, members, allocation_periods, bench_raw, bench_raw_domain
         RESTART IDENTITY CASCADE",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// `count` contribution.submitted events spread over 500 members.
pub fn contributions(period: uuid::Uuid, count: usize) -> anyhow::Result<Vec<Event>> {
    let members: Vec<uuid::Uuid> = (0..500).map(|_| uuid::Uuid::new_v4()).collect();
    let start = Utc::now();
    (0..count)
        .map(|i| {
            Event::new(
                uuid::Uuid::new_v4().to_string(),
                "contribution.submitted".into(),
                start + chrono::Duration::milliseconds(i as i64),
                json!({
                    "contribution_id": uuid::Uuid::new_v4(),
                    "member_id": members[i % members.len()],
                    "period_id": period,
                    "type": "labor",
                    "amount": 10 + (i % 90),
                }),
            )
            .map_err(anyhow::Error::from)
        })
        .collect()
}

/// Declares the topology and publishes every event, confirmed.
async fn fill(names: &Endpoints, events: &[Event]) -> anyhow::Result<()> {
    let connection = transport::connect(&names.amqp_url, "replay bench publisher").await?;
    let channel = connection.create_channel().await?;
    transport::declare(&channel, &names.exchange, &names.queue).await?;
    let publisher = Publisher::new(channel, &names.exchange).await?;
    publisher.publish_all(events, |_| {}).await?;
    // Close while the publisher's channel is still alive: dropping it first
    // races its own close against the connection's.
    transport::close(&connection, "filled").await;
    drop(publisher);
    Ok(())
}

/// The topology of the engine before ordered consumption: a classic queue,
/// bound with `#`; the previous binary's worker declares the same.
async fn fill_classic(names: &Endpoints, events: &[Event]) -> anyhow::Result<()> {
    use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
    let connection = transport::connect(&names.amqp_url, "replay bench publisher").await?;
    let channel = connection.create_channel().await?;
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    channel
        .exchange_declare(names.exchange.as_str().into(), lapin::ExchangeKind::Topic, durable, FieldTable::default())
        .await?;
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(names.queue.as_str().into(), durable, FieldTable::default()).await?;
    transport::bind(&channel, &names.queue, &names.exchange).await?;
    let publisher = Publisher::new(channel, &names.exchange).await?;
    publisher.publish_all(events, |_| {}).await?;
    transport::close(&connection, "filled").await;
    drop(publisher);
    Ok(())
}

/// The raw loop: no ledger, no handlers, no savepoints.
async fn baseline_drain(names: &Endpoints, pool: &PgPool, total: usize, shape: Baseline) -> anyhow::Result<Drain> {
    let (started, finished) = raw_consume(names, &names.queue, pool, total, shape).await?;
    let seconds = started.map_or(0.0, |s| finished.duration_since(s).as_secs_f64());
    Ok(Drain { events: total, seconds })
}

/// The raw limit's job on one queue: consume `total` messages → one
/// batched INSERT per batch into `bench_raw` → commit → ack multiple.
/// Returns when the first message arrived and when the last was acked.
pub(super) async fn raw_consume(
    names: &Endpoints,
    queue: &str,
    pool: &PgPool,
    total: usize,
    shape: Baseline,
) -> anyhow::Result<(Option<Instant>, Instant)> {
    let connection = transport::connect(&names.amqp_url, "replay bench baseline").await?;
    let channel = connection.create_channel().await?;
    channel.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(queue.into(), "bench-baseline".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    let mut done = 0;
    let mut started = None;
    while done < total {
        let first = consumer.next().await.context("baseline consumer closed")??;
        started.get_or_insert_with(Instant::now);
        let mut batch = vec![first];
        while batch.len() < 500 {
            match consumer.next().now_or_never() {
                Some(Some(Ok(d))) => batch.push(d),
                _ => break,
            }
        }
        let events: Vec<Event> = batch
            .iter()
            .map(|d| {
                crate::wire::envelope::Received {
                    routing_key: d.routing_key.as_str(),
                    properties: &d.properties,
                    body: &d.data,
                }
                .parse(usize::MAX)
            })
            .collect::<Result<_, _>>()?;
        let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let payloads: Vec<&str> = events.iter().map(|e| e.payload_json.as_str()).collect();
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO bench_raw (event_id, event_type, payload, status)
             SELECT *, 'processed' FROM unnest($1::text[], $2::text[], $3::text[]::jsonb[]) ON CONFLICT DO NOTHING",
        )
        .bind(&ids)
        .bind(&types)
        .bind(&payloads)
        .execute(&mut *tx)
        .await?;
        if shape == Baseline::WithDomainRow {
            sqlx::query(
                "INSERT INTO bench_raw_domain (id, member_id, period_id, amount)
                 SELECT (p->>'contribution_id')::uuid, (p->>'member_id')::uuid, (p->>'period_id')::uuid,
                        (p->>'amount')::numeric
                 FROM unnest($1::text[]::jsonb[]) AS p WHERE p ? 'contribution_id' ON CONFLICT DO NOTHING",
            )
            .bind(&payloads)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if let Some(last) = batch.last() {
            channel.basic_ack(last.delivery_tag, BasicAckOptions { multiple: true }).await?;
        }
        done += batch.len();
    }
    let finished = Instant::now();
    transport::close(&connection, "baseline done").await;
    Ok((started, finished))
}

/// Spawns the worker and times the drain from its first ledger row to the last.
async fn worker_drain(
    names: &Endpoints,
    pool: &PgPool,
    total: usize,
    worker_exe: &Path,
) -> anyhow::Result<(Drain, Vec<u64>, u64)> {
    let mut child = tokio::process::Command::new(worker_exe)
        .args(["worker", "--id", "bench", "--http", "off"])
        .env("DATABASE_URL", names.database_url.expose())
        .env("AMQP_URL", names.amqp_url.expose())
        .env("REPLAY_EXCHANGE", &names.exchange)
        .env("REPLAY_QUEUE", &names.queue)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {}", worker_exe.display()))?;
    let pid = child.id().context("worker exited at once")?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut started = None;
    let mut samples = vec![rss_kib(pid)];
    let mut next_mark = 1;
    loop {
        // max(id) reads one index page; a count over the growing ledger
        // every few milliseconds would slow the worker it measures.
        let newest: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM processed_events").fetch_one(pool).await?;
        let done = newest.unwrap_or(0) as usize;
        if done > 0 && started.is_none() {
            started = Some(Instant::now());
        }
        while next_mark < 4 && done * 4 >= total * next_mark {
            samples.push(rss_kib(pid));
            next_mark += 1;
        }
        if done >= total && processed(pool).await? >= total {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the worker did not drain {total} events in 10 minutes");
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the worker exited early ({status})");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seconds = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    samples.push(rss_kib(pid));
    let peak = peak_rss_kib(pid);
    let _ = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    Ok((Drain { events: total, seconds }, samples, peak))
}

/// Ledger rows processed (an exact count: for the end of a drain).
pub(super) async fn processed(pool: &PgPool) -> anyhow::Result<usize> {
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE status = 'processed'").fetch_one(pool).await?;
    Ok(count as usize)
}

fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

fn peak_rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:")
}
