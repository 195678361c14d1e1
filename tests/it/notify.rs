//! `--notify URL`: stakeholders hear by webhook that a plan was applied,
//! halted, finished or emergency-stopped, from a receiver the test serves on
//! 127.0.0.1:0; a webhook that fails or is gone changes nothing the
//! operator sees but one warning, and a bad URL is a usage error.
#![allow(clippy::unwrap_used)] // a test that cannot read its own database should fail loudly

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::common::*;

/// A webhook: records every body POSTed to it, and answers the scripted
/// statuses first (then 200).
#[derive(Clone, Default)]
struct Receiver {
    bodies: Arc<Mutex<Vec<Value>>>,
    answers: Arc<Mutex<Vec<u16>>>,
}

impl Receiver {
    /// Serves on 127.0.0.1:0 and returns the webhook's URL.
    async fn start(answers: &[u16]) -> (Self, String) {
        let receiver = Self { answers: Arc::new(Mutex::new(answers.to_vec())), ..Self::default() };
        let app = Router::new().route("/hook", post(Self::hear)).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook?token=s3cret", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    async fn hear(State(receiver): State<Self>, Json(body): Json<Value>) -> StatusCode {
        receiver.bodies.lock().unwrap().push(body);
        let mut answers = receiver.answers.lock().unwrap();
        let answer = if answers.is_empty() { 200 } else { answers.remove(0) };
        StatusCode::from_u16(answer).unwrap()
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<String> {
        self.bodies().iter().map(|b| b["event"].as_str().unwrap().to_string()).collect()
    }
}

/// `n` events recorded as processed, the queue empty.
async fn seed_processed(world: &World, n: usize) {
    let events: Vec<_> = (0..n).map(|i| event("member.noted", json!({"n": i}))).collect();
    world.publish(&events).await;
    let worker = world.start_worker(world.worker_config("w1"));
    world
        .wait_for_count(
            "SELECT count(*) FROM processed_events WHERE status = 'skipped'",
            n as i64,
            Duration::from_secs(20),
        )
        .await;
    worker.stop().await;
}

#[sqlx::test]
async fn an_apply_with_notify_posts_applied_then_finished_with_its_counts(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    seed_processed(&world, 12).await;
    let plan = desk.plan(&world, &["--all", "--reason", "INC-42 notes"]).await;
    let (receiver, url) = Receiver::start(&[]).await;

    let out = desk.apply(&world, plan["plan_path"].as_str().unwrap(), &["--yes", "--notify", &url]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));

    assert_eq!(receiver.events(), ["replay.applied", "replay.finished"]);
    let bodies = receiver.bodies();
    for body in &bodies {
        assert_eq!(body["plan_id"], plan["plan_id"]);
        assert_eq!(body["operator"], "bob");
        assert_eq!(body["reason"], "INC-42 notes");
        assert!(body["at"].as_str().is_some());
    }
    assert_eq!(bodies[0]["counts"], json!({"events": 12}));
    assert!(bodies[0]["next"].as_str().unwrap().contains("replay status"));
    assert_eq!(bodies[1]["counts"], json!({"events": 12, "published": 12, "kept_in_outbox": 0, "stale_rows": 0}));
    let next = bodies[1]["next"].as_str().unwrap();
    assert!(stdout_of(&out).contains(next), "the CLI's own next step: {next}");
    world.cleanup().await;
}

#[sqlx::test]
async fn a_webhook_answering_500_is_retried_and_the_apply_exits_0(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    seed_processed(&world, 5).await;
    let plan = desk.plan(&world, &["--all", "--reason", "retry"]).await;
    let (receiver, url) = Receiver::start(&[500]).await;

    let out = desk.apply(&world, plan["plan_path"].as_str().unwrap(), &["--yes", "--notify", &url]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    // The first attempt got the 500, the retry the 200.
    assert_eq!(receiver.events(), ["replay.applied", "replay.applied", "replay.finished"]);
    assert!(!stderr_of(&out).contains("not delivered"), "{}", stderr_of(&out));
    world.cleanup().await;
}

#[sqlx::test]
async fn an_unreachable_webhook_changes_nothing_but_a_warning_without_its_secret(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    seed_processed(&world, 5).await;
    let plan = desk.plan(&world, &["--all", "--reason", "gone"]).await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/T0/secret-path?token=hunter2");

    let out = desk.apply(&world, plan["plan_path"].as_str().unwrap(), &["--yes", "--json", "--notify", &url]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let outcome: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!((outcome["events"].as_u64(), outcome["published_now"].as_u64()), (Some(5), Some(5)));
    let stderr = stderr_of(&out);
    assert!(stderr.contains(&format!("not delivered to http://127.0.0.1:{port}")), "{stderr}");
    assert!(!stderr.contains("secret-path") && !stderr.contains("hunter2"), "{stderr}");
    world.cleanup().await;
}

#[sqlx::test]
async fn a_webhook_that_is_not_http_is_a_usage_error_and_nothing_is_applied(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    seed_processed(&world, 3).await;
    let plan = desk.plan(&world, &["--all", "--reason", "ftp"]).await;

    let out = desk.apply(&world, plan["plan_path"].as_str().unwrap(), &["--yes", "--notify", "ftp://x"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    let stderr = stderr_of(&out);
    assert!(stderr.contains("--notify") && stderr.contains("http://"), "{stderr}");
    assert!(desk.backup_files().is_empty());
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.audit_log").await, 0);
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.replay_runs").await, 0);
    world.cleanup().await;
}

#[sqlx::test]
async fn a_paused_apply_posts_halted_and_exits_4(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    seed_processed(&world, 30).await;
    let plan = desk.plan(&world, &["--all", "--reason", "pause"]).await;
    let (receiver, url) = Receiver::start(&[]).await;

    // The webhook from the environment this time.
    let apply = desk.spawn_apply(&world, plan["plan_path"].as_str().unwrap(), "10", &[("REPLAY_NOTIFY_URL", &url)]);
    world
        .wait_for_count(
            "SELECT count(*) FROM replay_control.replay_runs WHERE published >= 2",
            1,
            Duration::from_secs(30),
        )
        .await;
    sqlx::query("INSERT INTO replay_control.pause (operator, reason) VALUES ('carol', 'INC-13')")
        .execute(&world.pool)
        .await
        .unwrap();
    let out = apply.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr_of(&out));

    assert_eq!(receiver.events(), ["replay.applied", "replay.halted"]);
    let halted = &receiver.bodies()[1];
    assert_eq!(halted["plan_id"], plan["plan_id"]);
    let next = halted["next"].as_str().unwrap();
    assert!(next.contains("INC-13") && next.contains("run the same `replay apply` again"), "{next}");
    assert_eq!(halted["counts"]["events"], 30);
    let published = halted["counts"]["published"].as_u64().unwrap();
    assert!((2..30).contains(&published), "{published} published before the pause");
    world.cleanup().await;
}

#[sqlx::test]
async fn an_emergency_stop_posts_emergency_stopped(pool: PgPool) {
    let world = World::new(pool).await;
    let (receiver, url) = Receiver::start(&[]).await;

    let out = world
        .replay(&[
            "emergency-stop",
            "--no-restore",
            "--reason",
            "INC-77",
            "--operator",
            "dave",
            "--yes",
            "--notify",
            &url,
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(receiver.events(), ["replay.emergency_stopped"]);
    let body = &receiver.bodies()[0];
    assert_eq!((body["operator"].as_str(), body["reason"].as_str()), (Some("dave"), Some("INC-77")));
    assert!(body["next"].as_str().unwrap().contains("replay resume"));
    assert!(body.get("failed_steps").is_none(), "{body}");
    world.cleanup().await;
}
