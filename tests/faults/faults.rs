//! Faults, through TCP proxies the tests control (the shared Postgres and
//! RabbitMQ are never stopped): SIGKILL mid-batch three times in a row, a
//! database outage and a broker outage while a worker process consumes,
//! added latency, a hung database backend, poison and oversized messages
//! mid-stream, a broker failing under `publish` and under `apply`. Each case
//! checks every published event: none lost, none applied twice, the worker
//! still alive. The load test (four workers, a kill and a broker restart) is
//! in `load.rs`.
#![allow(clippy::unwrap_used)] // a test that cannot read its own database should fail loudly

use std::time::Duration;

use crate::common::*;
use sqlx::PgPool;
use uuid::Uuid;

/// Publishes `n` contributions (and, first, their period) and returns their ids.
async fn contributions(world: &World, period: Uuid, n: usize) -> Vec<Uuid> {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    let events: Vec<_> = ids.iter().map(|c| submitted(*c, Uuid::new_v4(), period, 10)).collect();
    world.publish(&events).await;
    ids
}

/// A period, then `n` contributions, waited for until processed.
async fn first_half(world: &World, n: usize) -> (Uuid, Vec<Uuid>) {
    let period = Uuid::new_v4();
    world.publish(&[period_opened(period)]).await;
    let ids = contributions(world, period, n).await;
    world.wait_for_count(PROCESSED, n as i64 + 1, Duration::from_secs(60)).await;
    (period, ids)
}

/// Sorts every published contribution: lost (not applied) or duplicated
/// (more than one ledger row or domain row); both must be empty. Then the
/// effect probe: no event applied twice, none processed without its effect.
async fn check_exactly_once(world: &World, ids: &[Uuid]) {
    let applied: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT c.id, (SELECT count(*) FROM processed_events p WHERE p.payload->>'contribution_id' = c.id::text)
           FROM contributions c WHERE c.id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(&world.pool)
    .await
    .unwrap();
    let lost = ids.len() - applied.len();
    let duplicated = applied.iter().filter(|(_, rows)| *rows != 1).count();
    assert_eq!((lost, duplicated), (0, 0), "lost {lost}, duplicated {duplicated} of {}", ids.len());
    assert_eq!(world.scalar("SELECT count(*) FROM contributions").await as usize, ids.len());
    world.assert_each_applied_once().await;
}

fn spawn_worker(
    world: &World,
    id: &str,
    database_url: Option<String>,
    amqp_url: Option<String>,
) -> tokio::process::Child {
    spawn_worker_serving(world, id, database_url, amqp_url).0
}

/// A worker process with its HTTP endpoint on a free port: (process, port).
fn spawn_worker_serving(
    world: &World,
    id: &str,
    database_url: Option<String>,
    amqp_url: Option<String>,
) -> (tokio::process::Child, u16) {
    let port = free_port();
    let mut command = tokio::process::Command::new(probed_replay());
    command
        .args(["worker", "--id", id, "--poll-interval", "200ms", "--retry-backoff", "100ms"])
        .args(["--http", &format!("127.0.0.1:{port}")])
        .envs(world.env())
        .env("RUST_LOG", "off")
        .kill_on_drop(true);
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    }
    if let Some(url) = amqp_url {
        command.env("AMQP_URL", url);
    }
    (command.spawn().unwrap(), port)
}

/// Ledger rows no message carries (an operator's reset, say): the claimer
/// leases them, so a worker killed mid-batch leaves leases behind.
async fn pending_periods(world: &World, n: usize) {
    sqlx::query(
        "INSERT INTO processed_events (event_id, event_type, payload, occurred_at, status)
         SELECT 'pending-' || i, 'period.opened',
                jsonb_build_object('period_id', gen_random_uuid(), 'start_date', '2026-01-01', 'end_date', '2026-03-31'),
                now(), 'pending'
           FROM generate_series(1, $1) AS i",
    )
    .bind(n as i32)
    .execute(&world.pool)
    .await
    .unwrap();
}

/// Kills `victim` (whose database link is `proxy`, its sessions named
/// `name`) while a batch of it is surely open and it holds leases: waits
/// for both, freezes the link so nothing more reaches the database, checks
/// that both still hold, then kill -9, and cuts the link so the database
/// ends the sessions at once. Returns the ids of the rows it held leased,
/// or `None` if the batch committed in the instant before the freeze.
async fn kill_mid_batch(
    world: &World,
    victim: &mut tokio::process::Child,
    proxy: &TcpProxy,
    name: &str,
) -> Option<Vec<i64>> {
    let caught = format!(
        "SELECT count(*) FROM pg_stat_activity
          WHERE application_name = '{name}' AND backend_xid IS NOT NULL
            AND EXISTS (SELECT 1 FROM processed_events WHERE status = 'processing' AND locked_by = '{name}')"
    );
    world.wait_for_count_at_least(&caught, 1, Duration::from_secs(60)).await;
    proxy.freeze();
    let still_open = world.scalar(&caught).await > 0;
    signal(victim, "-KILL");
    let _ = victim.wait().await;
    let leased: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM processed_events WHERE status = 'processing' AND locked_by = $1")
            .bind(name)
            .fetch_all(&world.pool)
            .await
            .unwrap();
    proxy.cut();
    proxy.restore();
    still_open.then_some(leased)
}

#[sqlx::test]
async fn kill_9_mid_batch_then_restart_applies_every_event_once(pool: PgPool) {
    let world = World::new(pool).await;
    let (events, _) = workload(3000);
    world.publish(&events).await;
    pending_periods(&world, 1500).await;
    let total = events.len() as i64 + 1500;
    // A slow link holds each batch open long enough to be caught open.
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    proxy.set_latency(Duration::from_millis(20));

    let mut leased_at_kills = std::collections::BTreeSet::new();
    let (mut attempts, mut kills_proven) = (0, 0);
    while kills_proven < 3 {
        attempts += 1;
        assert!(attempts <= 10, "caught a batch open in only {kills_proven} of {attempts} kills");
        let name = format!("victim-{attempts}");
        let url = named_session(&through(&world.database_url, proxy.port), &name);
        let mut victim =
            world.spawn_worker_process_with(&name, &["--batch-size", "100", "--lease", "2s"], &url, "warn");
        if let Some(leased) = kill_mid_batch(&world, &mut victim, &proxy, &name).await {
            assert!(!leased.is_empty());
            leased_at_kills.extend(leased);
            kills_proven += 1;
        }
        let after = world.scalar(PROCESSED).await;
        assert!(after < total, "kill {attempts}: killed mid-stream, not after the end ({after} processed)");
    }
    let mut survivor = world.spawn_worker_process("survivor", &[]);
    world.wait_for_count(PROCESSED, total, Duration::from_secs(60)).await;
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events").await, total);
    assert_eq!(world.scalar("SELECT count(*) FROM contributions WHERE status = 'approved'").await, 3000);
    assert_eq!(world.queue_depth().await, 0);
    // Each lease a kill left behind was taken back (counted as a failed
    // attempt) and its row applied once; nothing the open batches wrote survived.
    let reclaimed = world
        .scalar(&format!(
            "SELECT count(*) FROM processed_events WHERE id IN ({}) AND status = 'processed' AND retry_count >= 1",
            leased_at_kills.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        ))
        .await;
    assert_eq!(reclaimed as usize, leased_at_kills.len(), "every lease left by a kill reclaimed");
    world.assert_each_applied_once().await;
    world.assert_applied(&events, 1).await;
    signal(&survivor, "-TERM");
    let _ = survivor.wait().await;
    world.cleanup().await;
}

#[sqlx::test]
async fn a_database_outage_while_consuming_loses_and_duplicates_nothing(pool: PgPool) {
    let world = World::new(pool).await;
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    let (mut worker, port) =
        spawn_worker_serving(&world, "db-outage", Some(through(&world.database_url, proxy.port)), None);
    let (period, mut ids) = first_half(&world, 1500).await;
    // The outage starts while the worker consumes: events keep arriving.
    proxy.cut();
    ids.extend(contributions(&world, period, 1500).await);
    let reason = wait_for_status(port, "/health/ready", 503).await;
    // Processing stopped: nothing is committed for the rest of the outage,
    // the new events wait in the queue, and the worker keeps trying.
    let stalled_at = world.scalar(PROCESSED).await;
    let refused_before = proxy.counts().refused;
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(world.scalar(PROCESSED).await, stalled_at, "nothing processed during the outage ({reason})");
    assert!(stalled_at < 3001, "the outage landed before the end ({stalled_at} processed)");
    assert!(world.queue_depth().await > 0, "the events published during the outage wait in the queue");
    assert!(proxy.counts().refused > refused_before, "the worker kept trying to reconnect");
    assert_eq!(http_get(port, "/health/ready").await.map(|(code, _)| code), Some(503), "still not ready");
    assert!(worker.try_wait().unwrap().is_none(), "the worker survives the outage");
    proxy.restore();
    world.wait_for_count(PROCESSED, 3001, Duration::from_secs(60)).await;
    wait_for_status(port, "/health/ready", 200).await;
    check_exactly_once(&world, &ids).await;
    assert_eq!(world.queue_depth().await, 0);
    assert!(worker.try_wait().unwrap().is_none(), "the worker is still alive");
    world.cleanup().await;
}

#[sqlx::test]
async fn a_broker_outage_while_consuming_loses_and_duplicates_nothing(pool: PgPool) {
    let world = World::new(pool).await;
    let proxy = TcpProxy::start("127.0.0.1:5672").await;
    let (mut worker, port) = spawn_worker_serving(&world, "broker-outage", None, Some(through(AMQP_URL, proxy.port)));
    let (period, mut ids) = first_half(&world, 1500).await;
    proxy.cut();
    ids.extend(contributions(&world, period, 1500).await);
    let reason = wait_for_status(port, "/health/ready", 503).await;
    assert!(reason.contains("not consuming"), "readiness names the outage: {reason}");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(worker.try_wait().unwrap().is_none(), "the worker survives the outage");
    proxy.restore();
    assert_eq!(wait_for_status(port, "/health/ready", 200).await, "ready\n", "ready again once it is back");
    world.wait_for_count(PROCESSED, 3001, Duration::from_secs(60)).await;
    check_exactly_once(&world, &ids).await;
    assert!(worker.try_wait().unwrap().is_none(), "the worker is still alive");
    world.cleanup().await;
}

#[sqlx::test]
async fn added_latency_slows_processing_and_loses_nothing(pool: PgPool) {
    let world = World::new(pool).await;
    let db = TcpProxy::start("127.0.0.1:5432").await;
    let broker = TcpProxy::start("127.0.0.1:5672").await;
    db.set_latency(Duration::from_millis(200));
    broker.set_latency(Duration::from_millis(200));
    let mut worker = spawn_worker(
        &world,
        "slow-links",
        Some(through(&world.database_url, db.port)),
        Some(through(AMQP_URL, broker.port)),
    );
    let (_, ids) = first_half(&world, 1000).await;
    check_exactly_once(&world, &ids).await;
    // All of it went through both proxies, each chunk held back 200 ms.
    let (db, broker) = (db.counts(), broker.counts());
    assert!(db.bytes > 0 && db.delayed > 0, "database traffic went through the slow link: {db:?}");
    assert!(broker.bytes > 0 && broker.delayed > 0, "broker traffic went through the slow link: {broker:?}");
    assert!(worker.try_wait().unwrap().is_none());
    world.cleanup().await;
}

#[sqlx::test]
async fn events_published_during_a_broker_outage_wait_in_the_outbox_and_arrive_once(pool: PgPool) {
    let world = World::new(pool).await;
    let proxy = TcpProxy::start("127.0.0.1:5672").await;
    proxy.cut();
    let period = Uuid::new_v4();
    let ids: Vec<Uuid> = (0..200).map(|_| Uuid::new_v4()).collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut lines = vec![serde_json::json!({"event_type": "period.opened", "payload": {"period_id": period, "start_date": "2026-01-01", "end_date": "2026-03-31"}}).to_string()];
    lines.extend(ids.iter().map(|c| {
        serde_json::json!({"event_type": "contribution.submitted", "payload": {"contribution_id": c, "member_id": Uuid::new_v4(), "period_id": period, "type": "labor", "amount": 10}}).to_string()
    }));
    std::fs::write(file.path(), lines.join("\n")).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(["publish", "--file", file.path().to_str().unwrap()])
        .envs(world.env())
        .env("AMQP_URL", through(AMQP_URL, proxy.port))
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("201 kept in the outbox"), "{}", stdout_of(&out));
    assert_eq!(world.queue_depth().await, 0, "nothing reached the broker");

    // The broker is back (for the worker): the outbox is relayed, each event applied once.
    proxy.restore();
    let mut worker = spawn_worker(&world, "relay", None, None);
    world.wait_for_count(PROCESSED, 201, Duration::from_secs(60)).await;
    world.wait_for_count("SELECT count(*) FROM replay_control.outbox", 0, Duration::from_secs(10)).await;
    check_exactly_once(&world, &ids).await;
    assert!(worker.try_wait().unwrap().is_none());
    world.cleanup().await;
}

/// A directory of `pg_dump` and `pg_restore` wrappers that write down their
/// command line and environment, then run the real tool: to see what the
/// backup tools were handed.
fn recording_backup_tools(dir: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    for tool in ["pg_dump", "pg_restore"] {
        let real = String::from_utf8(std::process::Command::new("which").arg(tool).output().unwrap().stdout).unwrap();
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\" > \"{dir}/{tool}-$$.args\"\nenv > \"{dir}/{tool}-$$.env\"\nexec {real} \"$@\"\n",
            dir = dir.display(),
            real = real.trim()
        );
        let path = dir.join(tool);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap())
}

/// A canary password in DATABASE_URL (trust auth accepts any) must never
/// show: not in logs, plan files, audit rows, backups' names, the worker's
/// HTTP answers, or any command line, the backup tools' included; those get
/// it only through their environment, as `PGPASSWORD`.
#[sqlx::test]
async fn a_canary_password_never_appears_anywhere(pool: PgPool) {
    let world = World::new(pool).await;
    let canary = "canary-7f3a91";
    let mut url = url::Url::parse(&world.database_url).unwrap();
    url.set_password(Some(canary)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tools = tempfile::tempdir().unwrap();
    let path = recording_backup_tools(tools.path());
    let run = |args: Vec<String>| {
        let env = world.env();
        let url = url.to_string();
        let path = path.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_replay"))
                .args(args)
                .envs(env)
                .env("DATABASE_URL", url)
                .env("PATH", path)
                .env("RUST_LOG", "debug")
                .output()
                .await
                .unwrap()
        }
    };
    let port = free_port();
    let worker_log = dir.path().join("worker.log");
    let mut worker = tokio::process::Command::new(probed_replay())
        .args(["worker", "--id", "canary", "--http", &format!("127.0.0.1:{port}")])
        .envs(world.env())
        .env("DATABASE_URL", url.to_string())
        .env("RUST_LOG", "debug")
        // A file, not a pipe: a debug log outgrows a pipe nobody reads
        // until the end, and the worker would block writing to it.
        .stderr(std::fs::File::create(&worker_log).unwrap())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", worker.id().unwrap())).unwrap();
    first_half(&world, 20).await;
    let plans = dir.path().join("plans").display().to_string();
    let backups = dir.path().join("backups").display().to_string();
    let mut outputs = vec![
        run(vec![
            "plan".into(),
            "--all".into(),
            "--reason".into(),
            "r".into(),
            "--out-dir".into(),
            plans.clone(),
            "--json".into(),
        ])
        .await,
    ];
    let plan: serde_json::Value = serde_json::from_slice(&outputs[0].stdout).unwrap();
    let path = plan["plan_path"].as_str().unwrap().to_string();
    outputs.push(run(vec!["apply".into(), path.clone(), "--yes".into(), "--backup-dir".into(), backups]).await);
    assert_eq!(outputs[1].status.code(), Some(0), "{}", stderr_of(&outputs[1]));
    world.wait_for_count(PROCESSED, 21, Duration::from_secs(30)).await;
    outputs.push(run(vec!["status".into()]).await);
    let mut answers = String::new();
    for endpoint in ["/health", "/health/ready", "/health/detailed", "/metrics"] {
        let (code, body) = http_get(port, endpoint).await.expect("the worker answers");
        assert_eq!(code, 200, "{endpoint}: {body}");
        answers += &body;
    }
    assert!(answers.contains("database"), "the detailed health names the database: {answers}");
    worker.start_kill().unwrap();
    let worker_out = worker.wait_with_output().await.unwrap();

    // What the backup tools were handed: the password in PGPASSWORD only
    // (DATABASE_URL is the caller's own, inherited), never on a command line.
    let recorded: Vec<_> = std::fs::read_dir(tools.path()).unwrap().map(|e| e.unwrap().path()).collect();
    let named = |tool: &str, ext: &str| {
        recorded
            .iter()
            .filter(|p| {
                p.display().to_string().contains(&format!("/{tool}-")) && p.extension().is_some_and(|e| e == ext)
            })
            .count()
    };
    assert!(
        named("pg_dump", "args") >= 1 && named("pg_restore", "args") >= 1,
        "the apply ran both tools: {recorded:?}"
    );
    let mut seen = String::from_utf8_lossy(&cmdline).into_owned();
    for file in &recorded {
        let text = std::fs::read_to_string(file).unwrap();
        match file.extension().and_then(|e| e.to_str()) {
            Some("args") => seen += &text,
            Some("env") => {
                let carrying: Vec<&str> =
                    text.lines().filter(|l| l.contains(canary)).filter_map(|l| l.split('=').next()).collect();
                let elsewhere: Vec<&&str> =
                    carrying.iter().filter(|v| !["DATABASE_URL", "PGPASSWORD"].contains(v)).collect();
                assert!(elsewhere.is_empty(), "{} carries the password in {elsewhere:?}", file.display());
                // pg_restore --list reads a file and connects nowhere.
                if file.display().to_string().contains("/pg_dump-") {
                    assert!(carrying.contains(&"PGPASSWORD"), "pg_dump gets the password as PGPASSWORD: {carrying:?}");
                }
            }
            _ => {}
        }
    }
    for out in outputs.iter().chain([&worker_out]) {
        seen += &stdout_of(out);
        seen += &stderr_of(out);
    }
    seen += &std::fs::read_to_string(&worker_log).unwrap();
    seen += &answers;
    seen += &std::fs::read_to_string(&path).unwrap();
    let audit: Vec<String> =
        sqlx::query_scalar("SELECT details::text FROM replay_control.audit_log").fetch_all(&world.pool).await.unwrap();
    seen += &audit.join("\n");
    for entry in walk(dir.path()) {
        seen += &entry;
    }
    assert!(seen.len() > 1000, "the sweep read something");
    assert!(!seen.contains(canary), "the canary password leaked");
    world.cleanup().await;
}

/// Every file name under `dir`.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        names.push(entry.path().display().to_string());
        if entry.path().is_dir() {
            names.extend(walk(&entry.path()));
        }
    }
    names
}

#[sqlx::test]
async fn a_hung_database_backend_is_not_waited_on_forever(pool: PgPool) {
    let world = World::new(pool).await;
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    let mut worker = tokio::process::Command::new(probed_replay())
        .args(["worker", "--id", "hung-db", "--http", "off", "--batch-timeout", "2s", "--poll-interval", "200ms"])
        .envs(world.env())
        .env("DATABASE_URL", named_session(&through(&world.database_url, proxy.port), "hung-db"))
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log = LogTap::of(&mut worker);
    let (period, mut ids) = first_half(&world, 500).await;
    // Every connection the worker holds now hangs for good; new ones work.
    let before = proxy.counts();
    proxy.freeze();
    ids.extend(contributions(&world, period, 500).await);
    world.wait_for_count(PROCESSED, 1001, Duration::from_secs(90)).await;
    // The worker used a frozen connection, gave up on it after the batch
    // timeout, and went on over new ones.
    let after = proxy.counts();
    assert!(after.stalled > before.stalled, "a frozen connection was in use: {after:?}");
    assert!(after.connections > before.connections, "new connections replaced the frozen ones: {after:?}");
    log.wait_for("the database did not finish the batch within 2s", Duration::from_secs(5)).await;
    check_exactly_once(&world, &ids).await;
    assert!(worker.try_wait().unwrap().is_none(), "the worker is still alive");
    world.cleanup().await;
}

/// Every row a replay reset was processed again after its reset (none lost)
/// and the domain is what it was (none applied twice).
async fn check_replayed_once(world: &World, rows: i64, digest: &str) {
    world.wait_for_count("SELECT count(*) FROM replay_control.outbox", 0, Duration::from_secs(60)).await;
    world
        .wait_for_count(
            "SELECT count(*) FROM processed_events p JOIN replay_history h USING (event_id)
              WHERE p.status = 'processed' AND p.processed_at >= h.reset_at",
            rows,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(world.scalar("SELECT count(*) FROM replay_history").await, rows, "each row reset once");
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events").await, rows, "no new ledger rows");
    assert_eq!(world.domain_digest().await, digest, "the domain is unchanged: nothing applied twice");
}

#[sqlx::test]
async fn an_apply_whose_broker_fails_mid_republish_hands_the_rest_to_the_outbox(pool: PgPool) {
    let world = World::new(pool).await;
    let mut worker = spawn_worker(&world, "replays", None, None);
    let (_, ids) = first_half(&world, 2000).await;
    let digest = world.domain_digest().await;
    let desk = Desk::new();
    let plan = desk.plan(&world, &["--all", "--reason", "INC-7: replay everything"]).await;
    assert_eq!(plan["rows"], 2001);

    // The apply reaches RabbitMQ through a proxy that fails once a quarter is confirmed.
    let proxy = TcpProxy::start("127.0.0.1:5672").await;
    let broker_url = through(AMQP_URL, proxy.port);
    let apply = desk.spawn_apply(&world, plan["plan_path"].as_str().unwrap(), "500", &[("AMQP_URL", &broker_url)]);
    world
        .wait_for_count(
            "SELECT count(*) FROM replay_control.replay_runs WHERE published >= 500",
            1,
            Duration::from_secs(30),
        )
        .await;
    proxy.cut();
    let out = apply.wait_with_output().await.unwrap();
    let stdout = stdout_of(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(stdout.contains("with RabbitMQ failing mid-way") && stdout.contains("handed to the outbox"), "{stdout}");
    assert!(!stdout.contains("guest:guest"), "the broker URL is redacted: {stdout}");
    let confirmed = world.scalar("SELECT published FROM replay_control.replay_runs").await;
    assert!((500..2001).contains(&confirmed), "cut mid-way: {confirmed} confirmed");
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.replay_runs WHERE state = 'done'").await, 1);

    // The worker relays the outbox (its own link is fine) and processes everything once.
    check_replayed_once(&world, 2001, &digest).await;
    check_exactly_once(&world, &ids).await;
    assert!(worker.try_wait().unwrap().is_none());
    world.cleanup().await;
}

#[sqlx::test]
async fn an_apply_during_a_broker_outage_keeps_everything_in_the_outbox_until_an_emergency_stop_drops_it(pool: PgPool) {
    let world = World::new(pool).await;
    let mut worker = spawn_worker(&world, "before", None, None);
    let (_, ids) = first_half(&world, 300).await;
    worker.kill().await.unwrap();
    let before = world.ledger_digest().await;
    let desk = Desk::new();
    let plan = desk.plan(&world, &["--all", "--reason", "INC-8"]).await;
    let plan_path = plan["plan_path"].as_str().unwrap();
    let proxy = TcpProxy::start("127.0.0.1:5672").await;
    proxy.cut();
    let out = world
        .replay_with(
            &[
                "apply",
                plan_path,
                "--yes",
                "--json",
                "--operator",
                "bob",
                "--backup-dir",
                &desk.backups().display().to_string(),
            ],
            &[("AMQP_URL", &through(AMQP_URL, proxy.port))],
        )
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let outcome: serde_json::Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!((outcome["published_now"].as_u64(), outcome["kept_in_outbox"].as_u64()), (Some(0), Some(301)));
    assert!(outcome["broker_error"].as_str().unwrap().contains("cannot reach RabbitMQ"), "{outcome}");
    let labelled = world
        .scalar(&format!(
            "SELECT count(*) FROM replay_control.outbox WHERE replay_plan = '{}'",
            plan["plan_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(labelled, 301, "kept with the plan's label");
    let status: serde_json::Value =
        serde_json::from_str(&stdout_of(&world.replay(&["status", plan_path, "--json"]).await)).unwrap();
    assert_eq!(status["in_outbox"], 301, "{status}");

    // The emergency stop drops them with the queue's replay messages and restores.
    let out =
        world.replay(&["emergency-stop", "--plan", plan_path, "--reason", "INC-8 abort", "--yes", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(report["purged_replay_messages"], 301, "{report}");
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.outbox").await, 0);
    assert_eq!(world.ledger_digest().await, before, "the ledger is back to its pre-replay state");
    assert_eq!(world.scalar("SELECT count(*) FROM contributions").await as usize, ids.len());
    world.cleanup().await;
}

#[sqlx::test]
async fn poison_and_oversized_messages_mid_stream_are_dead_lettered_and_block_nothing(pool: PgPool) {
    let world = World::new(pool).await;
    let mut worker = world.spawn_worker_process("poisoned", &["--max-message-bytes", "4096"]);
    let (period, mut ids) = first_half(&world, 1000).await;
    let nested = format!("{}{}", "[".repeat(300), "]".repeat(300));
    let oversized = serde_json::json!({"contribution_id": Uuid::new_v4(), "note": "x".repeat(5000)}).to_string();
    world.publish_raw("contribution.submitted", b"{not json").await;
    world.publish_raw("contribution.submitted", nested.as_bytes()).await;
    world.publish_raw("contribution.submitted", br#"{"contribution_id":"a\u0000b"}"#).await;
    world.publish_raw("contribution.submitted", oversized.as_bytes()).await;
    world.publish_raw("contribution.submitted", br#"{"contribution_id": 5}"#).await;
    ids.extend(contributions(&world, period, 1000).await);

    world.wait_for_count(PROCESSED, 2001, Duration::from_secs(60)).await;
    world.wait_for_count("SELECT count(*) FROM dead_letters", 4, Duration::from_secs(20)).await;
    world
        .wait_for_count("SELECT count(*) FROM processed_events WHERE status = 'error'", 1, Duration::from_secs(20))
        .await;
    check_exactly_once(&world, &ids).await;
    assert_eq!(world.queue_depth().await, 0, "nothing stuck in the queue");
    assert!(worker.try_wait().unwrap().is_none(), "the worker is alive");

    // The operator's view names each one with its reason.
    let out = world.replay(&["dlq", "list", "--json"]).await;
    let listed: serde_json::Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    let reasons: Vec<String> =
        listed["dead_letters"].as_array().unwrap().iter().map(|l| l["reason"].as_str().unwrap().to_string()).collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons.iter().filter(|r| r.contains("not JSON")).count() == 2, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("\\u0000")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("over the limit of 4096 bytes")), "{reasons:?}");
    let failed = listed["failed_events"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "the wrong-shape payload fails in the ledger: {failed:?}");
    assert!(failed[0]["error_message"].as_str().unwrap().contains("contribution.submitted payload"), "{failed:?}");
    world.cleanup().await;
}

#[sqlx::test]
async fn a_hung_broker_is_detected_and_left_for_a_new_connection(pool: PgPool) {
    let world = World::new(pool).await;
    let proxy = TcpProxy::start("127.0.0.1:5672").await;
    let mut worker = spawn_worker(&world, "hung-broker", None, Some(through(AMQP_URL, proxy.port)));
    let (period, mut ids) = first_half(&world, 500).await;
    // Every open connection to the broker stops answering, as `kill -STOP` would make it.
    let before = proxy.counts();
    proxy.freeze();
    let frozen_at = std::time::Instant::now();
    ids.extend(contributions(&world, period, 500).await);
    world.wait_for_count(PROCESSED, 1001, Duration::from_secs(90)).await;
    let after = proxy.counts();
    assert!(after.stalled > before.stalled, "the frozen connection was in use: {after:?}");
    assert!(after.connections > before.connections, "a new connection replaced it: {after:?}");
    println!("a hung broker connection was replaced after {:.1} s", frozen_at.elapsed().as_secs_f64());
    check_exactly_once(&world, &ids).await;
    assert!(worker.try_wait().unwrap().is_none(), "the worker is alive");
    world.cleanup().await;
}

#[sqlx::test]
async fn a_broker_refusal_is_not_an_outage_and_parks_nothing_in_the_outbox(pool: PgPool) {
    let world = World::new(pool).await;
    let refused = "amqp://guest:canary-wrong@127.0.0.1:5672/%2f";
    let payload =
        serde_json::json!({"period_id": Uuid::new_v4(), "start_date": "2026-01-01", "end_date": "2026-03-31"});
    let out = world
        .replay_with(
            &["publish", "--type", "period.opened", "--payload", &payload.to_string()],
            &[("AMQP_URL", refused)],
        )
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout_of(&out));
    let said = stderr_of(&out);
    // The broker's own reason, and what to fix; not the outage's wording.
    assert!(said.contains("refused the connection") && said.contains("ACCESS_REFUSED"), "{said}");
    assert!(said.contains("Check the user, password and virtual host in AMQP_URL"), "{said}");
    assert!(!said.contains("cannot reach") && !said.contains("canary-wrong"), "{said}");
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.outbox").await, 0, "a refusal waits for nobody");
    world.cleanup().await;
}

/// A queue of the test's own that takes one message and rejects the rest
/// (`reject-publish`), bound beside the partition queue: the broker nacks
/// every publish it rejects. A classic queue: a quorum queue enforces its
/// length only after the fact.
#[sqlx::test]
async fn a_nacked_publish_is_a_refusal_and_parks_nothing_in_the_outbox(pool: PgPool) {
    use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::{AMQPValue, FieldTable};
    let world = World::new(pool).await;
    let full = format!("{}.full", world.endpoints.queue);
    let connection = replay::wire::transport::connect(&world.endpoints.amqp_url, "test setup").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongInt(1));
    arguments.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(full.as_str().into(), durable, arguments).await.unwrap();
    replay::wire::transport::bind(&channel, &full, &world.endpoints.exchange).await.unwrap();

    let events: Vec<_> = (0..3).map(|_| period_opened(Uuid::new_v4())).collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    let lines: Vec<String> = events
        .iter()
        .map(|e| {
            serde_json::json!({"event_id": e.event_id, "event_type": e.event_type, "payload": e.payload}).to_string()
        })
        .collect();
    std::fs::write(file.path(), lines.join("\n")).unwrap();
    let out = world.replay(&["publish", "--file", file.path().to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout_of(&out));
    let said = stderr_of(&out);
    assert!(said.contains("the broker refused event"), "the broker's nack is named: {said}");
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.outbox").await, 0, "a refusal waits for nobody");
    let _ = channel.queue_delete(full.as_str().into(), QueueDeleteOptions::default()).await;
    let _ = connection.close(200, "done".into()).await;
    world.cleanup().await;
}

/// An exchange with no queue bound: a mandatory publish comes back, and the
/// publisher says so as a refusal (waiting would not route it).
#[sqlx::test]
async fn an_unroutable_publish_is_a_refusal(pool: PgPool) {
    use lapin::options::{ExchangeDeclareOptions, ExchangeDeleteOptions};
    let world = World::new(pool).await;
    let unbound = format!("{}-unbound", world.endpoints.exchange);
    let connection = replay::wire::transport::connect(&world.endpoints.amqp_url, "test publisher").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .exchange_declare(
            unbound.as_str().into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let publisher = replay::wire::publisher::Publisher::new(channel.clone(), &unbound).await.unwrap();
    let event = period_opened(Uuid::new_v4());
    let error = publisher.publish_all(std::slice::from_ref(&event), |_| {}).await.unwrap_err();
    assert!(!error.is_outage(), "{error}");
    let cause = error.cause();
    assert!(
        cause.contains(&format!(
            "event {} (type period.opened) routed to no queue on exchange '{unbound}'",
            event.event_id
        )),
        "{cause}"
    );
    let _ = channel.exchange_delete(unbound.as_str().into(), ExchangeDeleteOptions::default()).await;
    let _ = connection.close(200, "done".into()).await;
    world.cleanup().await;
}
