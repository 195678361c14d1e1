//! The `replay` binary as operators run it: a clean stop (SIGTERM) and
//! restart of a spawned worker, the publish command's answers to bad input,
//! and the health endpoints. Crashes (SIGKILL) are in the fault suite.

#![allow(clippy::unwrap_used)] // a test that cannot read its own database should fail loudly

use std::time::Duration;

use crate::common::*;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test]
async fn sigterm_mid_stream_exits_zero_and_loses_nothing(pool: PgPool) {
    let world = World::new(pool).await;
    let (events, _) = workload(3000);
    world.publish(&events).await;

    // A slow database link holds each batch open long enough to signal
    // the worker while one surely is.
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    proxy.set_latency(Duration::from_millis(20));
    let url = named_session(&through(&world.database_url, proxy.port), "w1");
    let mut worker = world.spawn_worker_process_with("w1", &["--batch-size", "50"], &url, "replay=info");
    let log = LogTap::of(&mut worker);
    // Past its takeover (itself a writing transaction): the open one is a batch.
    wait_until_more_processed(&world, 0).await;
    let at_signal = world.wait_for_open_batch("w1", Duration::from_secs(30)).await;
    signal(&worker, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(20), worker.wait()).await.expect("exits").expect("status");
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean stop: {}", log.text());
    let after_stop = world.scalar(PROCESSED).await;
    // The batch open at the signal was finished, not dropped.
    assert!(after_stop > at_signal, "the open batch committed after the signal ({at_signal} -> {after_stop})");
    assert!(after_stop < events.len() as i64, "stopped mid-stream ({after_stop} processed)");
    log.wait_for("stopping: the batch in hand is committed and acked", Duration::from_secs(5)).await;

    let mut restarted = world.spawn_worker_process("w1", &[]);
    assert_all_applied_once(&world, events.len(), 3000).await;
    world.assert_applied(&events, 1).await;
    signal(&restarted, "-TERM");
    let _ = restarted.wait().await;
    world.cleanup().await;
}

#[sqlx::test]
async fn publish_from_a_file_and_from_flags(pool: PgPool) {
    let world = World::new(pool).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let period = Uuid::new_v4();
    let lines = [
        json!({"event_id": "evt-1", "event_type": "period.opened", "occurred_at": "2026-01-01T00:00:00Z",
               "payload": {"period_id": period, "start_date": "2026-01-01", "end_date": "2026-03-31"}}),
        json!({"event_id": "evt-2", "event_type": "period.close", "occurred_at": "2026-04-01T00:00:00Z",
               "payload": {"period_id": period}}),
    ];
    std::fs::write(&file, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let out = world.replay(&["publish", "--file", file.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("published 2 events"), "{}", stdout_of(&out));

    let out = world
        .replay(&[
            "publish",
            "--type",
            "period.opened",
            "--event-id",
            "evt-3",
            "--occurred-at",
            "2026-02-01T10:00:00Z",
            "--payload",
            &json!({"period_id": Uuid::new_v4(), "start_date": "2026-04-01", "end_date": "2026-06-30"}).to_string(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(world.queue_depth().await, 3);

    let worker = world.start_worker(world.worker_config("w1"));
    world.wait_for_count(PROCESSED, 3, Duration::from_secs(20)).await;
    worker.stop().await;
    let closed: String = sqlx::query_scalar("SELECT closed_at::text FROM allocation_periods WHERE id = $1")
        .bind(period)
        .fetch_one(&world.pool)
        .await
        .unwrap();
    assert!(closed.starts_with("2026-04-01"), "the event's own time is kept: {closed}");
    let occurred: String =
        sqlx::query_scalar("SELECT occurred_at::text FROM processed_events WHERE event_id = 'evt-3'")
            .fetch_one(&world.pool)
            .await
            .unwrap();
    assert!(occurred.starts_with("2026-02-01 10:00:00"), "{occurred}");
    world.cleanup().await;
}

#[sqlx::test]
async fn a_malformed_line_publishes_nothing_and_names_the_line(pool: PgPool) {
    let world = World::new(pool).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    std::fs::write(
        &file,
        "{\"event_id\":\"a\",\"event_type\":\"period.opened\",\"payload\":{}}\n{\"event_id\":\"b\",\"event_type\":\"period.opened\"\n",
    )
    .unwrap();
    let out = world.replay(&["publish", "--file", file.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(err.contains("line 2") && err.contains("Nothing was published"), "{err}");
    assert_eq!(world.queue_depth().await, 0, "nothing of the file was published");

    let out = world.replay(&["publish", "--type", "period.opened", "--payload", "{oops"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("--payload is not valid JSON"), "{}", stderr_of(&out));

    let out =
        world.replay(&["publish", "--type", "period.opened", "--payload", "{}", "--occurred-at", "yesterday"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("RFC 3339"), "{}", stderr_of(&out));
    assert_eq!(world.queue_depth().await, 0);
    world.cleanup().await;
}

#[sqlx::test]
async fn an_unreachable_broker_is_named_without_its_password(pool: PgPool) {
    let world = World::new(pool).await;
    const BROKER: (&str, &str) = ("AMQP_URL", "amqp://guest:canary-secret@127.0.0.1:1/%2f");
    const DATABASE: (&str, &str) = ("DATABASE_URL", "postgres://postgres:canary-secret@127.0.0.1:1/nowhere");
    let publish = ["publish", "--type", "period.opened", "--payload", "{}"];
    let out = world.replay_with(&publish, &[BROKER]).await;
    // The broker is unreachable: the event is kept in the outbox, said so, exit 0.
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1/%2f"), "{err}");
    assert!(!err.contains("canary-secret") && !stdout_of(&out).contains("canary-secret"), "{err}");
    assert!(stdout_of(&out).contains("1 kept in the outbox"), "{}", stdout_of(&out));
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.outbox").await, 1);
    let reason: String =
        sqlx::query_scalar("SELECT reason FROM replay_control.outbox").fetch_one(&world.pool).await.unwrap();
    assert!(!reason.contains("canary-secret"), "{reason}");

    // Neither the broker nor the database: nothing can be kept, exit 1, both named.
    let out = world.replay_with(&publish, &[BROKER, DATABASE]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("cannot reach RabbitMQ") && err.contains("could not be kept in the outbox"), "{err}");
    assert!(!err.contains("canary-secret"), "{err}");

    let out = world.replay_with(&["worker", "--http", "off"], &[DATABASE]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("cannot reach Postgres at postgres://postgres:***@127.0.0.1:1/nowhere"), "{err}");
    assert!(!err.contains("canary-secret"), "{err}");
    world.cleanup().await;
}

/// A plain HTTP/1.0 GET: status code and body.
#[sqlx::test]
async fn health_endpoints_tell_alive_from_ready(pool: PgPool) {
    let world = World::new(pool).await;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(["worker", "--id", "health", "--http", &addr])
        .envs(world.env())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    assert_eq!(wait_for_status(port, "/health", 200).await, "ok\n");
    // 200 "standby" until it leads its partition (it is the only worker), then "ready".
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let answer = http_get(port, "/health/ready").await;
        if answer.as_ref().is_some_and(|(code, body)| *code == 200 && body == "ready\n") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never ready: {answer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The detailed view and the metrics, after some work.
    let events: Vec<_> = (0..5).map(|i| event("member.noted", serde_json::json!({"n": i}))).collect();
    world.publish(&events).await;
    world
        .wait_for_count("SELECT count(*) FROM processed_events WHERE status = 'skipped'", 5, Duration::from_secs(20))
        .await;
    let detailed: serde_json::Value =
        serde_json::from_str(&wait_for_status(port, "/health/detailed", 200).await).unwrap();
    assert_eq!(detailed["database"]["status"], "ok", "{detailed}");
    assert_eq!((detailed["broker"]["consuming"].clone(), detailed["queue_depth"].clone()), (true.into(), 0.into()));
    assert_eq!(detailed["ledger"]["skipped"], 5);
    assert_eq!(detailed["workers"][0]["worker_id"], "health");
    for field in ["paused", "dlq", "last_processed_at", "consumer_lag_seconds"] {
        assert!(detailed.get(field).is_some(), "{field} in {detailed}");
    }
    let metrics = wait_for_status(port, "/metrics", 200).await;
    for name in [
        "replay_events_consumed_total 5",
        "replay_events_processed_total{event_type=\"member.noted\",outcome=\"skipped\"} 5",
        "replay_batch_processing_seconds_bucket",
        "replay_batch_size_events_count",
        "replay_ledger_rows{status=\"skipped\"} 5",
        "replay_queue_depth_messages 0",
        "replay_dlq_entries 0",
        "replay_paused 0",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    signal(&worker, "-TERM");
    let _ = worker.wait().await;

    // With the broker unreachable the worker lives on, but is not ready.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(["worker", "--id", "no-broker", "--http", &addr])
        .envs(world.env())
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("RUST_LOG", "off")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    assert_eq!(wait_for_status(port, "/health", 200).await, "ok\n");
    let reason = wait_for_status(port, "/health/ready", 503).await;
    assert!(reason.contains("not consuming"), "{reason}");
    signal(&worker, "-TERM");
    let status = worker.wait().await.unwrap();
    assert_eq!(status.code(), Some(0), "a worker waiting for its broker still stops cleanly");
    world.cleanup().await;
}

#[sqlx::test]
async fn readiness_turns_503_while_the_database_is_unreachable(pool: PgPool) {
    let world = World::new(pool).await;
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    let mut through_proxy = url::Url::parse(&world.database_url).unwrap();
    through_proxy.set_port(Some(proxy.port)).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(["worker", "--id", "db-outage", "--http", &addr])
        .envs(world.env())
        .env("DATABASE_URL", through_proxy.to_string())
        .env("RUST_LOG", "off")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // A 200 "standby" comes first until it leads its partition.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while wait_for_status(port, "/health/ready", 200).await != "ready\n" {
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.cut();
    let reason = wait_for_status(port, "/health/ready", 503).await;
    assert!(reason.contains("database"), "{reason}");
    assert_eq!(wait_for_status(port, "/health", 200).await, "ok\n", "alive all the same");
    let detailed: serde_json::Value =
        serde_json::from_str(&wait_for_status(port, "/health/detailed", 200).await).unwrap();
    assert_eq!(detailed["database"]["status"], "unreachable", "{detailed}");
    signal(&worker, "-TERM");
    let _ = worker.wait().await;
    world.cleanup().await;
}
