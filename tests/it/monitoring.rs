//! Monitoring as the on-call engineer gets it: the shipped alert rules pass
//! the distribution's `promtool` and name only metrics a real worker serves;
//! a real Prometheus (the machine's `prometheus`, private port and data
//! directory) scrapes every worker and loads the rules; and the outbox is
//! observable: while RabbitMQ is away the backlog shows in `/metrics` and
//! `/health/detailed`, and once the relay drained it the gauge is 0 and the
//! relayed counter rose by what it published.

#![allow(clippy::unwrap_used)] // a test that cannot read its own answers should fail loudly

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::*;
use replay::telemetry::metrics;
use serde_json::{json, Value};
use sqlx::PgPool;

const ALERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ops/prometheus-alerts.yml");
const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ops/grafana-dashboard.json");
const PROMETHEUS_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ops/prometheus.yml");
const SKIPPED: &str = "SELECT count(*) FROM processed_events WHERE status = 'skipped'";

#[sqlx::test]
async fn the_shipped_alerts_and_dashboard_use_metrics_the_worker_serves(pool: PgPool) {
    // The distribution's checker accepts the rules and the compose profile's
    // Prometheus configuration (which loads them), and counts every alert.
    let alerts = std::fs::read_to_string(ALERTS).unwrap();
    let alert_names = alert_names(&alerts);
    let out = promtool(&["check", "rules", ALERTS]);
    assert!(out.status.success(), "promtool check rules failed:\n{}{}", stdout_of(&out), stderr_of(&out));
    assert!(stdout_of(&out).contains(&format!("SUCCESS: {} rules found", alert_names.len())), "{}", stdout_of(&out));
    let out = promtool(&["check", "config", PROMETHEUS_CONFIG]);
    assert!(out.status.success(), "promtool check config failed:\n{}{}", stdout_of(&out), stderr_of(&out));

    // A worker that has processed a batch serves every metric it has.
    let world = World::new(pool).await;
    let port = free_port();
    let mut worker = spawn_worker(&world, "served", port, world.endpoints.amqp_url.expose());
    world.publish(&[event("member.noted", json!({"n": 1})), event("member.noted", json!({"n": 2}))]).await;
    world.wait_for_count(SKIPPED, 2, Duration::from_secs(20)).await;
    let scraped = metric_names(&wait_for_status(port, "/metrics", 200).await);
    let declared: BTreeSet<&str> = metrics::SERVED.into_iter().collect();
    assert_eq!(scraped.iter().map(String::as_str).collect::<BTreeSet<_>>(), declared, "served vs SERVED");

    for (file, text) in [(ALERTS, alerts), (DASHBOARD, std::fs::read_to_string(DASHBOARD).unwrap())] {
        let used = names_used(&text);
        assert!(!used.is_empty(), "{file} uses no metric");
        for name in used {
            assert!(scraped.contains(&name), "{file} uses {name}, which the worker does not serve");
        }
    }
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 6, "{} panels", panels.len());
    assert!(
        panels.iter().any(|p| p.to_string().contains(metrics::OUTBOX_BACKLOG)),
        "a dashboard panel shows the outbox backlog"
    );
    stop(&mut worker).await;
    world.cleanup().await;
}

#[sqlx::test]
async fn a_real_prometheus_scrapes_every_worker_and_loads_the_alerts(pool: PgPool) {
    let world = World::new(pool).await;
    // RabbitMQ unreachable (nothing listens there): two events wait in the
    // outbox, and the workers' relays cannot drain it.
    let away = broker_away(&world);
    keep_in_outbox(&world, &away, 2).await;
    let ports = [free_port(), free_port()];
    let mut workers =
        [spawn_worker(&world, "scraped-a", ports[0], &away), spawn_worker(&world, "scraped-b", ports[1], &away)];
    for port in ports {
        wait_for_status(port, "/health", 200).await;
    }

    let prometheus = Prometheus::start(&ports).await;
    let up = prometheus.wait_for("up{job=\"replay-worker\"} == 1", |r| r.len() == 2).await;
    let instances: BTreeSet<String> =
        up.iter().map(|s| s["metric"]["instance"].as_str().unwrap().to_string()).collect();
    assert_eq!(instances, ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(), "both workers scraped");
    prometheus.wait_for(metrics::OUTBOX_BACKLOG, |r| r.len() == 2 && r.iter().all(|s| value_of(s) == 2.0)).await;
    prometheus.wait_for(metrics::OUTBOX_FALLBACK, |r| r.len() == 2 && r.iter().all(|s| value_of(s) == 1.0)).await;

    // Every shipped rule is loaded, and evaluates without error against
    // what the workers serve.
    let file_names = alert_names(&std::fs::read_to_string(ALERTS).unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    let rules = loop {
        let answer = prometheus.api("/api/v1/rules").await;
        let rules: Vec<Value> = answer["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        if !rules.is_empty() && rules.iter().all(|r| r["health"] == "ok") {
            break rules;
        }
        assert!(Instant::now() < deadline, "rules never all evaluated ok: {answer}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let loaded: BTreeSet<String> = rules.iter().map(|r| r["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(loaded, file_names, "Prometheus loaded every alert of {ALERTS}");
    // The outbox alert's expression matches the served backlog: pending now,
    // firing after its 10 minutes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let alerts = prometheus.api("/api/v1/alerts").await;
        let pending = alerts["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["labels"]["alertname"] == "ReplayOutboxNotDraining" && a["state"] == "pending");
        if pending {
            break;
        }
        assert!(Instant::now() < deadline, "ReplayOutboxNotDraining never pending: {alerts}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    prometheus.stop().await;
    for worker in &mut workers {
        stop(worker).await;
    }
    world.cleanup().await;
}

#[sqlx::test]
async fn the_outbox_backlog_shows_until_the_relay_drains_it(pool: PgPool) {
    let world = World::new(pool).await;
    // `replay publish` finds RabbitMQ away: three events are kept.
    let away = broker_away(&world);
    keep_in_outbox(&world, &away, 3).await;
    let port = free_port();
    let mut worker = spawn_worker(&world, "relay", port, &away);

    // The worker's relay cannot reach the broker either: the backlog and a
    // failed round are told.
    let deadline = Instant::now() + Duration::from_secs(30);
    let scrape = loop {
        let scrape = wait_for_status(port, "/metrics", 200).await;
        if sample(&scrape, metrics::OUTBOX_RELAY_FAILURES).is_some_and(|n| n >= 1.0) {
            break scrape;
        }
        assert!(Instant::now() < deadline, "no failed relay round counted:\n{scrape}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(sample(&scrape, metrics::OUTBOX_BACKLOG), Some(3.0), "{scrape}");
    assert_eq!(sample(&scrape, metrics::OUTBOX_FALLBACK), Some(1.0), "{scrape}");
    assert!(sample(&scrape, metrics::OUTBOX_OLDEST).is_some_and(|age| age > 0.0), "{scrape}");
    assert_eq!(sample(&scrape, metrics::OUTBOX_RELAYED), Some(0.0), "{scrape}");
    let detailed: Value = serde_json::from_str(&wait_for_status(port, "/health/detailed", 200).await).unwrap();
    let outbox = &detailed["outbox"];
    assert_eq!((outbox["backlog"].clone(), outbox["fallback_active"].clone()), (json!(3), json!(true)), "{detailed}");
    assert_eq!(outbox["relay"]["failing"], true, "{detailed}");
    let error = outbox["relay"]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("cannot reach RabbitMQ") && error.contains("guest:***@"), "{detailed}");
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events").await, 0, "nothing reached the workers");

    // RabbitMQ is back where the worker looks for it: the relay drains the
    // outbox, and the events reach the ledger.
    let away_port = url::Url::parse(&away).unwrap().port().unwrap();
    let _back = broker_back_on(away_port).await;
    world.wait_for_count(SKIPPED, 3, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let scrape = loop {
        let scrape = wait_for_status(port, "/metrics", 200).await;
        if sample(&scrape, metrics::OUTBOX_BACKLOG) == Some(0.0) {
            break scrape;
        }
        assert!(Instant::now() < deadline, "the outbox gauge never fell to 0:\n{scrape}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(sample(&scrape, metrics::OUTBOX_RELAYED), Some(3.0), "rose by the three relayed:\n{scrape}");
    assert_eq!(sample(&scrape, metrics::OUTBOX_FALLBACK), Some(0.0), "{scrape}");
    assert_eq!(sample(&scrape, metrics::OUTBOX_OLDEST), Some(0.0), "{scrape}");
    let detailed: Value = serde_json::from_str(&wait_for_status(port, "/health/detailed", 200).await).unwrap();
    let outbox = &detailed["outbox"];
    assert_eq!((outbox["backlog"].clone(), outbox["fallback_active"].clone()), (json!(0), json!(false)), "{detailed}");
    assert_eq!(outbox["relay"]["failing"], false, "{detailed}");
    assert!(outbox["relay"]["last_relayed_at"].is_string(), "{detailed}");
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.outbox").await, 0);
    stop(&mut worker).await;
    world.cleanup().await;
}

/// This world's broker URL with a port nothing listens on (yet).
fn broker_away(world: &World) -> String {
    through(world.endpoints.amqp_url.expose(), free_port())
}

/// `replay publish` of `n` events while the broker at `amqp_url` is away:
/// all kept in the outbox.
async fn keep_in_outbox(world: &World, amqp_url: &str, n: usize) {
    let file = tempfile::NamedTempFile::new().unwrap();
    let lines: Vec<String> =
        (0..n).map(|i| json!({"event_type": "member.noted", "payload": {"n": i}}).to_string()).collect();
    std::fs::write(file.path(), lines.join("\n")).unwrap();
    let out = world.replay_with(&["publish", "--file", file.path().to_str().unwrap()], &[("AMQP_URL", amqp_url)]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains(&format!("{n} kept in the outbox")), "{}", stdout_of(&out));
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.outbox").await, n as i64);
}

/// RabbitMQ reachable again on `port`: every connection there is forwarded
/// to the shared broker until the returned task is dropped.
async fn broker_back_on(port: u16) -> AbortOnDrop {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    AbortOnDrop(tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut broker) = tokio::net::TcpStream::connect("127.0.0.1:5672").await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                }
            });
        }
    }))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A `replay worker` with its HTTP endpoint on `port`, talking to RabbitMQ
/// at `amqp_url`.
fn spawn_worker(world: &World, id: &str, port: u16, amqp_url: &str) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(["worker", "--id", id, "--http", &format!("127.0.0.1:{port}"), "--poll-interval", "100ms"])
        .envs(world.env())
        .env("AMQP_URL", amqp_url)
        .env("RUST_LOG", "off")
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn stop(worker: &mut tokio::process::Child) {
    signal(worker, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(30), worker.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0), "the worker stops cleanly");
}

fn promtool(args: &[&str]) -> std::process::Output {
    std::process::Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool runs (Debian package prometheus; scripts/services installs it)")
}

/// The alert names a rules file declares.
fn alert_names(rules: &str) -> BTreeSet<String> {
    rules.lines().filter_map(|l| l.trim().strip_prefix("- alert:")).map(|n| n.trim().to_string()).collect()
}

/// The `replay_*` metric names a text mentions (a histogram by its name).
fn names_used(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("replay_") && w.len() > "replay_".len())
        .map(|w| histogram_name(w).to_string())
        .collect()
}

/// The `replay_*` metrics in a Prometheus text scrape.
fn metric_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && l.starts_with("replay_"))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|name| histogram_name(name).to_string())
        .collect()
}

fn histogram_name(series: &str) -> &str {
    series.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count")
}

/// The value of an unlabelled sample in a scrape.
fn sample(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A query result's value (`[time, "value"]`).
fn value_of(series: &Value) -> f64 {
    series["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
}

/// The machine's Prometheus, private to one test: its own port, its data in
/// a temporary directory, a configuration written here that scrapes the
/// given worker ports every second and loads the shipped alert rules.
struct Prometheus {
    child: tokio::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(worker_ports: &[u16]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<String> = worker_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let config = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [ALERTS],
            "scrape_configs": [{"job_name": "replay-worker", "static_configs": [{"targets": targets}]}],
        });
        // JSON is YAML: Prometheus reads it as its configuration.
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config.to_string()).unwrap();
        let port = free_port();
        let child = tokio::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus runs (Debian package prometheus; scripts/services installs it)");
        let prometheus = Self { child, port, _dir: dir };
        wait_for_status(port, "/-/ready", 200).await;
        prometheus
    }

    /// A GET of Prometheus's HTTP API, its JSON answer.
    async fn api(&self, path_and_query: &str) -> Value {
        let (code, body) = http_get(self.port, path_and_query).await.expect("Prometheus answers");
        assert_eq!(code, 200, "{path_and_query}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Waits up to 30 s for an instant query whose result `done` accepts.
    async fn wait_for(&self, query: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let encoded: String = url::form_urlencoded::byte_serialize(query.as_bytes()).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = self.api(&format!("/api/v1/query?query={encoded}")).await;
            let result = answer["data"]["result"].as_array().cloned().unwrap_or_default();
            if done(&result) {
                return result;
            }
            assert!(Instant::now() < deadline, "{query}: {answer}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Kills it and waits for it to exit.
    async fn stop(mut self) {
        self.child.kill().await.unwrap();
    }
}
