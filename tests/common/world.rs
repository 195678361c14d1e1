//! Builds a fresh world per test: the database `#[sqlx::test]` made, an
//! exchange and queue with a unique suffix on the shared RabbitMQ, workers in
//! process or as spawned binaries, and waits on real outcomes.
#![allow(dead_code)]

pub mod broker;
pub mod probe;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lapin::options::{BasicPublishOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::BasicProperties;
use replay::config::{Endpoints, SecretUrl};
use replay::wire::envelope::Event;
use replay::wire::publisher::Publisher;
use replay::wire::transport;
use replay::worker::{self, WorkerConfig};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

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
        };
        let world = Self { pool, database_url: url.to_string(), endpoints };
        for statement in probe::SCHEMA {
            sqlx::query(statement).execute(&world.pool).await.expect("create the effect probe's table");
        }
        let connection = transport::connect(&world.endpoints.amqp_url, "test setup").await.expect("RabbitMQ is up");
        let channel = connection.create_channel().await.expect("channel");
        transport::declare(&channel, &world.endpoints.exchange, &world.endpoints.queue).await.expect("declare");
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
        let depth = transport::queue_depth(&channel, &self.endpoints.queue).await.expect("depth");
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
                let dead = transport::dead_letter_queue(&self.endpoints.queue);
                for queue in [self.endpoints.queue.as_str(), dead.as_str()] {
                    let _ = channel.queue_delete(queue.into(), QueueDeleteOptions::default()).await;
                }
                let _ = channel
                    .exchange_delete(self.endpoints.exchange.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
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

/// A spawned process's stderr, read as it comes (so a chatty process never
/// blocks on a full pipe), for a test to wait on what it says.
pub struct LogTap {
    text: std::sync::Arc<std::sync::Mutex<String>>,
}

impl LogTap {
    /// Takes `child`'s piped stderr.
    pub fn of(child: &mut tokio::process::Child) -> Self {
        use tokio::io::AsyncReadExt;
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let into = text.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 8192];
            while let Ok(n) = stderr.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                into.lock().expect("log lock").push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        Self { text }
    }

    pub fn text(&self) -> String {
        self.text.lock().expect("log lock").clone()
    }

    /// Waits up to `limit` for `needle` in the log.
    pub async fn wait_for(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.text().contains(needle) {
            assert!(Instant::now() < deadline, "waited {limit:?} for {needle:?} in the log:\n{}", self.text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `url` with its port replaced: the way through a [`TcpProxy`].
pub fn through(url: &str, port: u16) -> String {
    let mut url = url::Url::parse(url).expect("a URL");
    url.set_port(Some(port)).expect("a URL with a host");
    url.to_string()
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

/// The `replay` binary with the effect probe (`examples/probed_replay.rs`):
/// what the tests run as a worker. `cargo test` builds it with the tests;
/// the build here makes a run of one test target (`--test`) use a fresh one.
pub fn probed_replay() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        // target/<profile>/deps/<test> -> target/<profile>
        let profile_dir = exe.parent().and_then(Path::parent).expect("a test binary lives in <profile>/deps");
        let mut build = std::process::Command::new(env!("CARGO"));
        build.args(["build", "--quiet", "--example", "probed_replay", "--manifest-path"]);
        build.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
        match profile_dir.file_name().and_then(|name| name.to_str()) {
            Some("debug") => {}
            Some("release") => {
                build.arg("--release");
            }
            Some(profile) => {
                build.args(["--profile", profile]);
            }
            None => panic!("no profile directory above {}", exe.display()),
        }
        let status = build.status().expect("run cargo build --example probed_replay");
        assert!(status.success(), "cargo build --example probed_replay failed");
        profile_dir.join("examples").join("probed_replay")
    })
}

pub struct RunningWorker {
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<anyhow::Result<()>>,
}

impl RunningWorker {
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("worker stops within 20 s")
            .expect("worker task did not panic")
            .expect("worker stopped cleanly");
    }
}

/// Builders for the cooperative's events.
pub fn event(event_type: &str, payload: Value) -> Event {
    event_at(event_type, payload, Utc::now())
}

pub fn event_at(event_type: &str, payload: Value, at: DateTime<Utc>) -> Event {
    Event::new(Uuid::new_v4().to_string(), event_type.to_string(), at, payload).expect("storable payload")
}

pub fn period_opened(period: Uuid) -> Event {
    event("period.opened", json!({"period_id": period, "start_date": "2026-01-01", "end_date": "2026-03-31"}))
}

pub fn submitted(contribution: Uuid, member: Uuid, period: Uuid, amount: u32) -> Event {
    event(
        "contribution.submitted",
        json!({"contribution_id": contribution, "member_id": member, "period_id": period, "type": "labor", "amount": amount}),
    )
}

pub fn approved(contribution: Uuid) -> Event {
    event("contribution.approved", json!({"contribution_id": contribution}))
}

pub fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Ledger rows processed.
pub const PROCESSED: &str = "SELECT count(*) FROM processed_events WHERE status = 'processed'";

/// A period, then `n` contributions, each approved: 2n + 1 events.
pub fn workload(n: usize) -> (Vec<replay::wire::envelope::Event>, Uuid) {
    let period = Uuid::new_v4();
    let mut events = vec![period_opened(period)];
    let member = Uuid::new_v4();
    for _ in 0..n {
        let contribution = Uuid::new_v4();
        events.push(submitted(contribution, member, period, 3));
        events.push(approved(contribution));
    }
    (events, period)
}

pub fn signal(child: &tokio::process::Child, name: &str) {
    let pid = child.id().expect("worker is running").to_string();
    let status = std::process::Command::new("kill").args([name, &pid]).status().expect("kill");
    assert!(status.success());
}

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

/// A plain HTTP/1.0 GET: (status code, body), or `None` if nothing answers.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    Some((code, body))
}

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits up to 20 s for `path` to answer `expected`; returns the body.
pub async fn wait_for_status(port: u16, path: &str, expected: u16) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((code, body)) = http_get(port, path).await {
            if code == expected {
                return body;
            }
        }
        assert!(std::time::Instant::now() < deadline, "{path} never answered {expected}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A scratch directory holding the plans and the backups of one test.
pub struct Desk {
    pub dir: tempfile::TempDir,
}

impl Desk {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    pub fn plans(&self) -> String {
        self.dir.path().join("plans").display().to_string()
    }

    pub fn backups(&self) -> PathBuf {
        self.dir.path().join("backups")
    }

    pub fn backup_files(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.backups()) {
            Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
            Err(_) => vec![],
        }
    }

    /// Runs `replay plan ... --json` and returns its answer.
    pub async fn plan(&self, world: &World, args: &[&str]) -> Value {
        let plans = self.plans();
        let mut full = vec!["plan", "--out-dir", plans.as_str(), "--operator", "alice", "--json"];
        full.extend(args);
        let out = world.replay(&full).await;
        assert_eq!(out.status.code(), Some(0), "{full:?}: {}", stderr_of(&out));
        serde_json::from_str(&stdout_of(&out)).unwrap()
    }

    /// Starts `replay apply PLAN --yes --operator bob --rate RATE` with some
    /// of the world's settings replaced, its output piped.
    pub fn spawn_apply(
        &self,
        world: &World,
        plan: &str,
        rate: &str,
        overrides: &[(&str, &str)],
    ) -> tokio::process::Child {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_replay"))
            .args(["apply", plan, "--yes", "--operator", "bob", "--rate", rate])
            .arg("--backup-dir")
            .arg(self.backups())
            .envs(world.env())
            .envs(overrides.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn replay apply")
    }

    /// Runs `replay apply PLAN --operator bob` with `args`.
    pub async fn apply(&self, world: &World, plan: &str, args: &[&str]) -> std::process::Output {
        let backups = self.backups().display().to_string();
        let mut full = vec!["apply", plan, "--operator", "bob", "--backup-dir", backups.as_str()];
        full.extend(args);
        world.replay(&full).await
    }
}

/// A TCP proxy the test controls, in front of a shared service: `cut()`
/// drops every open connection and refuses new ones, as an outage would,
/// `restore()` ends the outage, `set_latency()` delays every chunk each way;
/// the service itself is never touched.
pub struct TcpProxy {
    pub port: u16,
    state: std::sync::Arc<ProxyState>,
}

struct ProxyState {
    /// What went through, to prove a fault landed on live traffic.
    counts: ProxyCounters,
    down: std::sync::atomic::AtomicBool,
    /// Connections open when `freeze` was called stop forwarding, forever.
    frozen: std::sync::Mutex<CancellationToken>,
    latency_ms: std::sync::atomic::AtomicU64,
    cut: std::sync::Mutex<CancellationToken>,
}

impl TcpProxy {
    pub async fn start(target: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let state = std::sync::Arc::new(ProxyState {
            counts: ProxyCounters::default(),
            down: std::sync::atomic::AtomicBool::new(false),
            frozen: std::sync::Mutex::new(CancellationToken::new()),
            latency_ms: std::sync::atomic::AtomicU64::new(0),
            cut: std::sync::Mutex::new(CancellationToken::new()),
        });
        let accepting = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                if accepting.down.load(std::sync::atomic::Ordering::SeqCst) {
                    accepting.counts.refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    continue; // dropped at once: the service looks down
                }
                accepting.counts.connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let cut = accepting.cut.lock().expect("proxy lock").clone();
                let frozen = accepting.frozen.lock().expect("proxy lock").clone();
                let state = accepting.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else { return };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        () = pump(client_read, server_write, state.clone(), frozen.clone()) => {}
                        () = pump(server_read, client_write, state.clone(), frozen) => {}
                        () = cut.cancelled() => {}
                    }
                });
            }
        });
        Self { port, state }
    }

    /// The outage: open connections drop, new ones are closed at once.
    pub fn cut(&self) {
        self.state.down.store(true, std::sync::atomic::Ordering::SeqCst);
        self.state.cut.lock().expect("proxy lock").cancel();
    }

    /// The outage ends: new connections go through again.
    pub fn restore(&self) {
        *self.state.cut.lock().expect("proxy lock") = CancellationToken::new();
        self.state.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// A hung peer, as `kill -STOP` makes one: every connection open now
    /// stays open and silent for good; new connections work.
    pub fn freeze(&self) {
        let mut frozen = self.state.frozen.lock().expect("proxy lock");
        frozen.cancel();
        *frozen = CancellationToken::new();
    }

    /// Added delay for every chunk, each way.
    pub fn set_latency(&self, latency: Duration) {
        self.state.latency_ms.store(latency.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    }

    /// What the proxy has seen so far.
    pub fn counts(&self) -> ProxyCounts {
        let c = &self.state.counts;
        let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::SeqCst);
        ProxyCounts {
            connections: load(&c.connections),
            refused: load(&c.refused),
            bytes: load(&c.bytes),
            delayed: load(&c.delayed),
            stalled: load(&c.stalled),
        }
    }
}

#[derive(Default)]
struct ProxyCounters {
    connections: std::sync::atomic::AtomicU64,
    refused: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
    delayed: std::sync::atomic::AtomicU64,
    stalled: std::sync::atomic::AtomicU64,
}

/// A snapshot of a proxy's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyCounts {
    /// Connections accepted and forwarded.
    pub connections: u64,
    /// Connections dropped at once during an outage.
    pub refused: u64,
    /// Bytes forwarded, both ways.
    pub bytes: u64,
    /// Chunks held back by the added latency.
    pub delayed: u64,
    /// Chunks a frozen connection had to forward and never did: proof that
    /// a peer was using a connection when it froze.
    pub stalled: u64,
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: std::sync::Arc<ProxyState>,
    frozen: CancellationToken,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let latency = state.latency_ms.load(std::sync::atomic::Ordering::SeqCst);
        if latency > 0 {
            state.counts.delayed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        if frozen.is_cancelled() {
            state.counts.stalled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
        state.counts.bytes.fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
    }
}
