//! The world one test acts on: the database `#[sqlx::test]` made (with the
//! effect probe's table), an exchange and queue with a unique suffix on the
//! shared RabbitMQ, workers in process or as spawned binaries, the `replay`
//! binary run against it, and waits and assertions on its rows.

use std::process::Stdio;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::BasicProperties;
use replay::config::{Endpoints, SecretUrl};
use replay::wire::envelope::Event;
use replay::wire::publisher::Publisher;
use replay::wire::transport;
use replay::worker::{self, WorkerConfig};
use serde_json::json;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::events::{approved, event, period_opened, submitted};
use super::probe;
use super::process::probed_replay;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub struct World {
    pub pool: PgPool,
    pub endpoints: Endpoints,
    pub database_url: String,
}

impl World {
    pub async fn new(pool: PgPool) -> Self {
        Self::on_broker(pool, AMQP_URL).await
    }

    /// A world whose broker is the one at `amqp_url` (a private node).
    pub async fn on_broker(pool: PgPool, amqp_url: &str) -> Self {
        Self::partitioned(pool, amqp_url, 1).await
    }

    /// A world of `partitions` partitions on the broker at `amqp_url` (one
    /// with the consistent-hash exchange, when more than one).
    pub async fn partitioned(pool: PgPool, amqp_url: &str, partitions: u16) -> Self {
        // Silent unless asked: TEST_LOG=debug cargo test.
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        let database = pool.connect_options().get_database().expect("sqlx::test names its database").to_string();
        let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for sqlx::test");
        let mut url = url::Url::parse(&base).expect("DATABASE_URL is a URL");
        url.set_path(&format!("/{database}"));
        let suffix = Uuid::new_v4().simple().to_string();
        let endpoints = Endpoints {
            database_url: SecretUrl::new(url.to_string()),
            amqp_url: SecretUrl::new(amqp_url),
            exchange: format!("test-{suffix}"),
            queue: format!("test-{suffix}.worker"),
            partitions,
        };
        let world = Self { pool, database_url: url.to_string(), endpoints };
        for statement in probe::SCHEMA {
            sqlx::query(statement).execute(&world.pool).await.expect("create the effect probe's table");
        }
        let connection = transport::connect(&world.endpoints.amqp_url, "test setup").await.expect("RabbitMQ is up");
        let channel = connection.create_channel().await.expect("channel");
        transport::declare_stream(&channel, &world.endpoints).await.expect("declare");
        let _ = connection.close(200, "declared".into()).await;
        world
    }

    /// A worker configuration fit for tests: quick retries and polling.
    pub fn worker_config(&self, id: &str) -> WorkerConfig {
        let mut config = WorkerConfig::new(id.to_string());
        config.retry.backoff = Duration::from_millis(50);
        config.retry.max_backoff = Duration::from_millis(400);
        config.retry.max_attempts = 3;
        config.poll_interval = Duration::from_millis(100);
        config
    }

    /// Runs a worker in this process until the returned token is cancelled.
    pub fn start_worker(&self, config: WorkerConfig) -> RunningWorker {
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(worker::run(
            config,
            self.endpoints.clone(),
            self.pool.clone(),
            probe::registry(),
            worker::Liveness::default(),
            shutdown.clone(),
        ));
        RunningWorker { shutdown, handle }
    }

    /// Spawns a `replay worker` (the probed binary) against this world.
    pub fn spawn_worker_process(&self, id: &str, extra: &[&str]) -> tokio::process::Child {
        self.spawn_worker_process_with(id, extra, &self.database_url, "warn")
    }

    /// As [`World::spawn_worker_process`], reaching the database at
    /// `database_url`, logging at `log` (a `RUST_LOG` filter).
    pub fn spawn_worker_process_with(
        &self,
        id: &str,
        extra: &[&str],
        database_url: &str,
        log: &str,
    ) -> tokio::process::Child {
        tokio::process::Command::new(probed_replay())
            .args(["worker", "--id", id, "--http", "off", "--poll-interval", "100ms", "--retry-backoff", "50ms"])
            .args(extra)
            .envs(self.env())
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn replay worker")
    }

    /// The environment a `replay` command needs to act on this world.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", self.database_url.clone()),
            ("AMQP_URL", self.endpoints.amqp_url.expose().to_string()),
            ("REPLAY_EXCHANGE", self.endpoints.exchange.clone()),
            ("REPLAY_QUEUE", self.endpoints.queue.clone()),
            ("REPLAY_PARTITIONS", self.endpoints.partitions.to_string()),
        ]
    }

    /// Runs the `replay` binary to completion.
    pub async fn replay(&self, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_replay"))
            .args(args)
            .envs(self.env())
            .env("RUST_LOG", "warn")
            .output()
            .await
            .expect("run replay")
    }

    /// Runs the `replay` binary with some of this world's settings replaced.
    pub async fn replay_with(&self, args: &[&str], overrides: &[(&str, &str)]) -> std::process::Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_replay"))
            .args(args)
            .envs(self.env())
            .envs(overrides.iter().copied())
            .output()
            .await
            .expect("run replay")
    }

    /// Plans a replay of the whole ledger into `dir` and returns the plan
    /// file's path, failing the test if planning fails.
    pub async fn plan_all(&self, dir: &std::path::Path, reason: &str) -> String {
        let dir = dir.to_str().expect("a UTF-8 directory");
        let out = self.replay(&["plan", "--all", "--reason", reason, "--out-dir", dir, "--json"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan --json prints JSON");
        plan["plan_path"].as_str().expect("the plan's path").to_string()
    }

    /// Starts `replay apply PLAN --yes --rate RATE` in the background,
    /// backing up into `backups`, its stderr kept for the test to read.
    pub fn spawn_apply(&self, plan: &str, rate: u32, backups: &std::path::Path) -> tokio::process::Child {
        let (rate, backups) = (rate.to_string(), backups.to_str().expect("a UTF-8 directory"));
        tokio::process::Command::new(env!("CARGO_BIN_EXE_replay"))
            .args(["apply", plan, "--yes", "--rate", &rate, "--backup-dir", backups])
            .envs(self.env())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn replay apply")
    }

    pub async fn publish(&self, events: &[Event]) {
        let connection = transport::connect(&self.endpoints.amqp_url, "test publisher").await.expect("connect");
        let channel = connection.create_channel().await.expect("channel");
        let publisher = Publisher::new(channel, &self.endpoints.exchange).await.expect("confirm mode");
        publisher.publish_all(events, |_| {}).await.expect("published");
        let _ = connection.close(200, "published".into()).await;
        drop(publisher);
    }

    /// Publishes a bare body with a routing key and no properties, as
    /// `rabbitmqadmin publish` does.
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8]) {
        let connection = transport::connect(&self.endpoints.amqp_url, "test raw publisher").await.expect("connect");
        let channel = connection.create_channel().await.expect("channel");
        channel
            .basic_publish(
                self.endpoints.exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("sent");
        let _ = connection.close(200, "published".into()).await;
    }

    pub async fn queue_depth(&self) -> u32 {
        let connection = transport::connect(&self.endpoints.amqp_url, "test inspector").await.expect("connect");
        let channel = connection.create_channel().await.expect("channel");
        let depth = transport::stream_depth(&channel, &self.endpoints).await.expect("depth");
        let _ = connection.close(200, "inspected".into()).await;
        depth
    }

    /// How many times the effect probe saw each of `events` applied, sorted
    /// into those applied `times` times and the rest.
    pub async fn applications(&self, events: &[Event], times: i64) -> Applications {
        let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        self.applications_of(&ids, times).await
    }

    /// As [`World::applications`], by event id.
    pub async fn applications_of(&self, ids: &[&str], times: i64) -> Applications {
        let counts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT m.id, count(p.event_id) FROM unnest($1::text[]) AS m(id)
               LEFT JOIN effect_probe p ON p.event_id = m.id GROUP BY m.id",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .expect("count the probe's rows");
        let mut sorted = Applications { expected: 0, fewer: vec![], more: vec![] };
        for (id, count) in counts {
            match count.cmp(&times) {
                std::cmp::Ordering::Equal => sorted.expected += 1,
                std::cmp::Ordering::Less => sorted.fewer.push((id, count)),
                std::cmp::Ordering::Greater => sorted.more.push((id, count)),
            }
        }
        sorted
    }

    /// The effect probe against the ledger, over the whole database: a
    /// processed row is owed one application, plus one for each replay that
    /// reset it from `processed`.
    pub async fn effect_check(&self) -> EffectCheck {
        let (doubled, unapplied, unrecorded): (i64, i64, i64) = sqlx::query_as(
            "WITH owed AS (
                 SELECT p.event_id, 1 + (SELECT count(*) FROM replay_history h
                                          WHERE h.ledger_id = p.id AND h.prior_status = 'processed') AS times
                   FROM processed_events p WHERE p.status = 'processed'),
             seen AS (SELECT event_id, count(*) AS times FROM effect_probe GROUP BY event_id)
             SELECT count(*) FILTER (WHERE s.times > o.times),
                    count(*) FILTER (WHERE coalesce(s.times, 0) < o.times),
                    (SELECT count(*) FROM seen WHERE NOT EXISTS
                        (SELECT 1 FROM processed_events p WHERE p.event_id = seen.event_id))
               FROM owed o LEFT JOIN seen s USING (event_id)",
        )
        .fetch_one(&self.pool)
        .await
        .expect("check the probe against the ledger");
        EffectCheck { doubled, unapplied, unrecorded }
    }

    /// No event applied more often than the ledger owes it (once, plus once
    /// per replay), none processed without it, no effect without its row.
    pub async fn assert_each_applied_once(&self) {
        let check = self.effect_check().await;
        assert_eq!(check, EffectCheck::default(), "the effect probe against the ledger");
        assert!(self.scalar("SELECT count(*) FROM effect_probe").await > 0, "the probe saw applications");
    }

    /// Every one of `events` applied exactly `times` times (by the probe).
    pub async fn assert_applied(&self, events: &[Event], times: i64) {
        let found = self.applications(events, times).await;
        assert!(
            found.fewer.is_empty() && found.more.is_empty(),
            "of {} events, {} applied {times} times; fewer (lost): {} {:?}; more (applied again): {} {:?}",
            events.len(),
            found.expected,
            found.fewer.len(),
            found.fewer.iter().take(5).collect::<Vec<_>>(),
            found.more.len(),
            found.more.iter().take(5).collect::<Vec<_>>(),
        );
    }

    /// Waits until a session named `name` (see [`named_session`]) is inside
    /// a transaction that has written and not committed, a batch surely
    /// open, and returns the processed count seen in the same snapshot
    /// (which that batch is not part of).
    pub async fn wait_for_open_batch(&self, name: &str, limit: Duration) -> i64 {
        let deadline = Instant::now() + limit;
        loop {
            let (open, processed): (bool, i64) = sqlx::query_as(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND backend_xid IS NOT NULL),
                        (SELECT count(*) FROM processed_events WHERE status = 'processed')",
            )
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .expect("look for an open batch");
            if open {
                return processed;
            }
            assert!(Instant::now() < deadline, "no batch of {name} seen open in {limit:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string())).fetch_one(&self.pool).await.expect(sql)
    }

    pub async fn status_of(&self, event_id: &str) -> Option<(String, i32, Option<String>)> {
        sqlx::query_as("SELECT status, retry_count, error_message FROM processed_events WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await
            .expect("status query")
    }

    pub async fn contribution_status(&self, contribution: Uuid) -> String {
        sqlx::query_scalar("SELECT status FROM contributions WHERE id = $1")
            .bind(contribution)
            .fetch_one(&self.pool)
            .await
            .expect("the contribution exists")
    }

    /// Waits until `sql` (a count) reaches `expected`, or panics after `limit`.
    pub async fn wait_for_count(&self, sql: &str, expected: i64, limit: Duration) {
        self.wait_until(sql, |v| v == expected, &format!("= {expected}"), limit).await;
    }

    /// Waits until `sql` (a count) reaches at least `expected`.
    pub async fn wait_for_count_at_least(&self, sql: &str, expected: i64, limit: Duration) {
        self.wait_until(sql, |v| v >= expected, &format!(">= {expected}"), limit).await;
    }

    async fn wait_until(&self, sql: &str, done: impl Fn(i64) -> bool, wanted: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.scalar(sql).await;
            if done(value) {
                return;
            }
            assert!(Instant::now() < deadline, "waited {limit:?} for `{sql}` {wanted}, still {value}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A digest of every ledger row, to compare states.
    pub async fn ledger_digest(&self) -> String {
        sqlx::query_scalar("SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM processed_events t")
            .fetch_one(&self.pool)
            .await
            .expect("ledger digest")
    }

    /// A digest of every domain table, to compare states.
    pub async fn domain_digest(&self) -> String {
        let mut digest = String::new();
        for table in ["members", "allocation_periods", "contributions", "allocations", "payments", "provider_calls"] {
            let rows: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {table} t"
            )))
            .fetch_one(&self.pool)
            .await
            .expect("digest");
            digest.push_str(&format!("{table}={};", rows.unwrap_or_default()));
        }
        digest
    }

    /// The cooperative's life, published: a period, two contributions of one
    /// member (70 approved, 30 rejected) and the period's close. Returns
    /// (period, member).
    pub async fn cooperative(&self) -> (Uuid, Uuid) {
        let (period, member, contribution, rejected) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        self.publish(&[
            period_opened(period),
            submitted(contribution, member, period, 70),
            submitted(rejected, member, period, 30),
            approved(contribution),
            event("contribution.rejected", json!({"contribution_id": rejected, "reason": "duplicate"})),
            event("period.close", json!({"period_id": period})),
        ])
        .await;
        (period, member)
    }

    /// [`World::cooperative`], processed by a worker that is stopped again:
    /// six settled ledger rows and the domain they made, nothing running.
    pub async fn cooperative_processed(&self) -> (Uuid, Uuid) {
        let made = self.cooperative().await;
        let worker = self.start_worker(self.worker_config("w1"));
        self.wait_for_count(PROCESSED, 6, Duration::from_secs(20)).await;
        worker.stop().await;
        made
    }

    /// The events that hand out the cooperative's one allocation (70) and pay it.
    pub async fn paying_the_allocation(&self) -> Vec<Event> {
        let allocation: Uuid =
            sqlx::query_scalar("SELECT id FROM allocations").fetch_one(&self.pool).await.expect("one allocation");
        let payment = Uuid::new_v4();
        vec![
            event("allocation.distributed", json!({"allocation_id": allocation})),
            event("payment.initiated", json!({"payment_id": payment, "allocation_id": allocation, "amount": 70})),
            event("payment.completed", json!({"payment_id": payment})),
        ]
    }

    pub async fn cleanup(&self) {
        if let Ok(connection) = transport::connect(&self.endpoints.amqp_url, "test cleanup").await {
            if let Ok(channel) = connection.create_channel().await {
                for partition in self.endpoints.partition_list() {
                    let dead = transport::dead_letter_queue(&partition.queue);
                    for queue in [partition.queue.as_str(), dead.as_str()] {
                        let _ = channel.queue_delete(queue.into(), QueueDeleteOptions::default()).await;
                    }
                }
                for exchange in [self.endpoints.hash_exchange(), self.endpoints.exchange.clone()] {
                    let _ = channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await;
                }
            }
            let _ = connection.close(200, "cleaned".into()).await;
        }
    }
}

/// What the effect probe found against the ledger; all zero when every
/// processed event was applied exactly once.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EffectCheck {
    /// Processed rows applied more often than owed.
    pub doubled: i64,
    /// Processed rows applied less often than owed.
    pub unapplied: i64,
    /// Applications with no ledger row.
    pub unrecorded: i64,
}

/// `url` with `application_name` set, so a test can find the sessions of
/// one process in `pg_stat_activity`.
pub fn named_session(url: &str, name: &str) -> String {
    let mut url = url::Url::parse(url).expect("a database URL");
    url.query_pairs_mut().append_pair("application_name", name);
    url.to_string()
}

/// The effect probe's count of a set of events.
#[derive(Debug)]
pub struct Applications {
    /// Applied as many times as expected.
    pub expected: usize,
    /// (event id, applications) of those applied fewer times.
    pub fewer: Vec<(String, i64)>,
    /// (event id, applications) of those applied more times.
    pub more: Vec<(String, i64)>,
}

pub struct RunningWorker {
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<()>,
}

impl RunningWorker {
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("worker stops within 20 s")
            .expect("worker task did not panic");
    }
}

/// Ledger rows processed.
pub const PROCESSED: &str = "SELECT count(*) FROM processed_events WHERE status = 'processed'";

/// Waits until the worker processed something beyond `before`.
pub async fn wait_until_more_processed(world: &World, before: i64) -> i64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let done = world.scalar(PROCESSED).await;
        if done > before {
            return done;
        }
        assert!(std::time::Instant::now() < deadline, "the worker processed nothing in 30 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn assert_all_applied_once(world: &World, events: usize, contributions: i64) {
    world.wait_for_count(PROCESSED, events as i64, Duration::from_secs(60)).await;
    world.assert_each_applied_once().await;
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events").await, events as i64);
    assert_eq!(world.scalar("SELECT count(*) FROM contributions WHERE status = 'approved'").await, contributions);
    assert_eq!(world.scalar("SELECT count(*) FROM contributions").await, contributions);
    assert_eq!(world.queue_depth().await, 0);
}

/// Every closed period's allocations add up to its approved contributions,
/// member by member.
pub async fn assert_allocations_right(world: &World, periods: &[Uuid]) {
    for period in periods {
        let wrong: Vec<(Uuid, String, String)> = sqlx::query_as(
            "SELECT c.member_id, sum(c.amount)::text, coalesce(a.amount::text, 'none')
               FROM contributions c LEFT JOIN allocations a ON a.member_id = c.member_id AND a.period_id = c.period_id
              WHERE c.period_id = $1 AND c.status = 'approved'
              GROUP BY c.member_id, a.amount HAVING a.amount IS DISTINCT FROM sum(c.amount)",
        )
        .bind(period)
        .fetch_all(&world.pool)
        .await
        .expect("read the allocations");
        if !wrong.is_empty() {
            // What the next engineer needs to tell a delivery out of order
            // (a ledger id after the close's) from an event applied late.
            let late: Vec<(i64, String, String, i32, Option<String>)> = sqlx::query_as(
                "SELECT p.id, p.event_type, p.status, p.retry_count, p.error_message FROM processed_events p
                   JOIN processed_events c ON c.event_type = 'period.close' AND c.payload->>'period_id' = $1
                  WHERE p.id > c.id AND p.payload->>'period_id' = $1
                     OR p.id >= c.id AND p.event_type = 'period.close' AND p.payload->>'period_id' = $1
                     OR p.id > c.id AND p.event_type = 'contribution.approved'
                  ORDER BY p.id LIMIT 20",
            )
            .bind(period.to_string())
            .fetch_all(&world.pool)
            .await
            .expect("read what came after the close");
            panic!("period {period}: (member, approved sum, allocation) wrong: {wrong:?}; the close and what came after it: {late:?}");
        }
        let status: String = sqlx::query_scalar("SELECT status FROM allocation_periods WHERE id = $1")
            .bind(period)
            .fetch_one(&world.pool)
            .await
            .expect("read the period");
        assert_eq!(status, "closed");
    }
}
