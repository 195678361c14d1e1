//! `replay bench partitions`: the stream spread over 1, 2 and 4 partitions,
//! each count with as many `replay worker` processes (one leading each
//! partition), next to the raw limit of the same job on the same queues,
//! measured in the same run.
//!
//! Raw limit: one lapin consumer per partition queue, all at once, each
//! doing the worker bench's raw job (consume → batched INSERT → commit →
//! ack multiple). Workers: started during a pause so that each takes the
//! lead of one partition before any event is queued; the clock runs from
//! the resume to the last row processed. The events are periods opened
//! and contributions spread round-robin over them, keyed by period as
//! `replay publish` keys them, so the consistent-hash exchange spreads
//! them over the partition queues; the broker needs its
//! `rabbitmq_consistent_hash_exchange` plugin for 2 and 4.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use serde_json::json;
use sqlx::PgPool;

use crate::config::Endpoints;
use crate::wire::envelope::Event;
use crate::wire::publisher::Publisher;
use crate::wire::transport::{self, TransportError};

use super::worker::{contributions, create_raw_table, processed, raw_consume, reset, Baseline};
use super::*;

/// The partition counts measured, in order.
const COUNTS: [u16; 3] = [1, 2, 4];
/// Periods the contributions are spread over: the keys the hash spreads
/// (16 of them leave partitions uneven by chance: 4, 3, 2 and 7 keys).
const PERIODS: usize = 64;

/// One partition count's measurement.
#[derive(Debug, Clone)]
pub struct Measured {
    pub partitions: u16,
    /// One (raw limit, workers) pair per round.
    pub rounds: Vec<(Drain, Drain)>,
    /// Messages each partition queue held after the last fill.
    pub spread: Vec<u32>,
}

impl Measured {
    fn raw_rate(&self) -> f64 {
        median(self.rounds.iter().map(|(raw, _)| raw.rate()).collect())
    }

    fn worker_rate(&self) -> f64 {
        median(self.rounds.iter().map(|(_, workers)| workers.rate()).collect())
    }

    /// Median over rounds of workers' rate / raw limit's rate.
    pub fn ratio(&self) -> f64 {
        median(self.rounds.iter().map(|(raw, w)| w.rate() / raw.rate().max(f64::EPSILON)).collect())
    }
}

/// What `replay bench partitions` prints.
#[derive(Debug, Clone)]
pub struct Report {
    pub measured: Vec<Measured>,
    pub cores: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = |f: &mut std::fmt::Formatter<'_>, name: &str, d: &Drain| {
            writeln!(f, "{name:<62} {:>7} events in {:>6.2} s = {:>8.0} events/s", d.events, d.seconds, d.rate())
        };
        for m in &self.measured {
            let spread: Vec<String> = m.spread.iter().map(u32::to_string).collect();
            writeln!(f, "{} partition(s), events per partition queue: {}", m.partitions, spread.join(" / "))?;
            for (round, (raw, workers)) in m.rounds.iter().enumerate() {
                writeln!(f, "  round {}:", round + 1)?;
                line(f, "    raw limit (a consumer per queue: INSERT -> ack multiple):", raw)?;
                line(f, &format!("    {} replay worker(s), one leading each partition:", m.partitions), workers)?;
            }
        }
        for m in &self.measured {
            writeln!(
                f,
                "ratio: workers / raw limit with {} partition(s) = {:.2} (median of {} rounds)",
                m.partitions,
                m.ratio(),
                m.rounds.len()
            )?;
        }
        if let Some(one) = self.measured.first() {
            for m in self.measured.iter().skip(1) {
                writeln!(
                    f,
                    "scaling: {} partitions / 1 = {:.2} for the workers, {:.2} for the raw limit (median rates; {} core(s) here)",
                    m.partitions,
                    m.worker_rate() / one.worker_rate().max(f64::EPSILON),
                    m.raw_rate() / one.raw_rate().max(f64::EPSILON),
                    self.cores
                )?;
            }
        }
        Ok(())
    }
}

/// Measures every count in [`COUNTS`] with `events` contributions per drain.
pub async fn run(endpoints: &Endpoints, events: usize, keep: bool, exe: &Path) -> anyhow::Result<Report> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut measured = Vec::with_capacity(COUNTS.len());
    for partitions in COUNTS {
        // A scratch world per count: the count is recorded in the database,
        // and every process refuses another one.
        let (scratch, names) = scratch(endpoints, "partitions").await?;
        let names = Endpoints { partitions, ..names };
        let result = measure(&names, &scratch.pool, events, exe).await;
        finish(endpoints, scratch, &names, keep).await?;
        measured.push(result?);
    }
    Ok(Report { measured, cores })
}

async fn measure(names: &Endpoints, pool: &PgPool, count: usize, exe: &Path) -> anyhow::Result<Measured> {
    create_raw_table(pool).await?;
    let events = keyed_events(count)?;
    let mut rounds = Vec::with_capacity(ROUNDS);
    let mut spread = Vec::new();
    for round in 1..=ROUNDS {
        let p = names.partitions;
        eprintln!("{p} partition(s), round {round}/{ROUNDS}: raw limit over {} events…", events.len());
        spread = fill(names, &events).await?;
        let raw = raw_drain(names, pool, &spread).await?;
        reset(pool).await?;

        eprintln!("{p} partition(s), round {round}/{ROUNDS}: {p} worker(s) over {} events…", events.len());
        let workers = workers_drain(names, pool, &events, exe).await?;
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM contributions").fetch_one(pool).await?;
        anyhow::ensure!(
            applied as usize == count,
            "the workers applied {applied} contributions, expected {count}: the benchmark is void"
        );
        reset(pool).await?;
        rounds.push((raw, workers));
    }
    Ok(Measured { partitions: names.partitions, rounds, spread })
}

/// A period opened for each of [`PERIODS`] periods, then `count`
/// contributions round-robin over them, each keyed as `replay publish`
/// keys it.
fn keyed_events(count: usize) -> anyhow::Result<Vec<Event>> {
    let periods: Vec<uuid::Uuid> = (0..PERIODS).map(|_| uuid::Uuid::new_v4()).collect();
    let mut events = Vec::with_capacity(PERIODS + count);
    for period in &periods {
        events.push(Event::new(
            uuid::Uuid::new_v4().to_string(),
            "period.opened".into(),
            Utc::now(),
            json!({"period_id": period, "start_date": "2026-01-01", "end_date": "2026-03-31"}),
        )?);
    }
    let per_period = count.div_ceil(PERIODS);
    let mut spread: Vec<Vec<Event>> =
        periods.iter().map(|p| contributions(*p, per_period)).collect::<anyhow::Result<_>>()?;
    for i in 0..count {
        if let Some(event) = spread[i % PERIODS].pop() {
            events.push(event);
        }
    }
    events
        .into_iter()
        .map(|event| {
            let partition_key = crate::handlers::partition_key(&event)
                .map_err(|field| anyhow::anyhow!("a bench event has no {field}"))?;
            Ok(Event { partition_key, ..event })
        })
        .collect()
}

/// Declares the stream and publishes every event, confirmed; returns how
/// many messages each partition queue holds.
async fn fill(names: &Endpoints, events: &[Event]) -> anyhow::Result<Vec<u32>> {
    let connection = transport::connect(&names.amqp_url, "replay bench publisher").await?;
    let channel = transport::channel(&connection).await?;
    match transport::declare_stream(&channel, names).await {
        Err(TransportError::NoHashExchange { .. }) => anyhow::bail!(
            "the broker at {} has no consistent-hash exchange, which {} partitions need: run \
             `rabbitmq-plugins enable rabbitmq_consistent_hash_exchange` there (or point AMQP_URL at a broker \
             that has it), then run the bench again",
            names.amqp_url.redacted(),
            names.partitions
        ),
        other => other?,
    }
    let probe = transport::channel(&connection).await?;
    let publisher = Publisher::new(channel, &names.exchange).await?;
    publisher.publish_all(events, |_| {}).await?;
    let mut spread = Vec::new();
    for partition in names.partition_list() {
        spread.push(transport::queue_depth(&probe, &partition.queue).await?);
    }
    // Close while the channels are still alive (see the worker bench's fill).
    transport::close(&connection, "filled").await;
    drop(publisher);
    let queued: u32 = spread.iter().sum();
    anyhow::ensure!(queued as usize == events.len(), "{queued} of {} events were queued", events.len());
    Ok(spread)
}

/// One raw consumer per partition queue, all at once; the drain runs from
/// the first message any of them took to the last ack.
async fn raw_drain(names: &Endpoints, pool: &PgPool, spread: &[u32]) -> anyhow::Result<Drain> {
    let consumers = names.partition_list().into_iter().zip(spread.iter().copied()).map(|(partition, depth)| {
        let (names, pool) = (names.clone(), pool.clone());
        tokio::spawn(async move { raw_consume(&names, &partition.queue, &pool, depth as usize, Baseline::Raw).await })
    });
    let mut first = None::<Instant>;
    let mut last = None::<Instant>;
    for consumer in consumers.collect::<Vec<_>>() {
        let (started, finished) = consumer.await.context("a raw consumer panicked")??;
        if let Some(started) = started {
            first = Some(first.map_or(started, |f| f.min(started)));
        }
        last = Some(last.map_or(finished, |l| l.max(finished)));
    }
    let seconds = match (first, last) {
        (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
        _ => 0.0,
    };
    Ok(Drain { events: spread.iter().sum::<u32>() as usize, seconds })
}

/// Pauses, starts one worker per partition and waits until each leads
/// one, fills the queues, resumes, and times the drain to the last row
/// processed.
async fn workers_drain(names: &Endpoints, pool: &PgPool, events: &[Event], exe: &Path) -> anyhow::Result<Drain> {
    replay(exe, names, &["pause", "--reason", "bench: workers take their partitions"]).await?;
    sqlx::query("DELETE FROM replay_control.partition_leaders").execute(pool).await?;
    let mut children = Vec::new();
    for n in 0..names.partitions {
        let id = format!("bench-{n}");
        let child = command(exe, names, &["worker", "--id", &id, "--http", "off"])
            .spawn()
            .with_context(|| format!("spawning {}", exe.display()))?;
        children.push(child);
    }
    let spread = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (rows, leaders): (i64, i64) =
                sqlx::query_as("SELECT count(*), count(DISTINCT worker_id) FROM replay_control.partition_leaders")
                    .fetch_one(pool)
                    .await?;
            if rows == i64::from(names.partitions) && leaders == rows {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "the workers did not take one partition each in 60 s");
            for child in &mut children {
                if let Some(status) = child.try_wait()? {
                    anyhow::bail!("a worker exited early ({status})");
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    spread.await?;
    fill(names, events).await?;
    replay(exe, names, &["resume", "--reason", "bench: drain"]).await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let total = events.len() as i64;
    loop {
        // Cheap while they run (see the worker bench); the exact count once
        // the newest id says every row is in.
        let newest: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM processed_events").fetch_one(pool).await?;
        if newest.unwrap_or(0) >= total && processed(pool).await? as i64 >= total {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the workers did not drain {total} events in 10 minutes");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    for child in &mut children {
        if let Some(pid) = child.id() {
            let _ = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
        }
    }
    for child in &mut children {
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }
    Ok(Drain { events: events.len(), seconds })
}
