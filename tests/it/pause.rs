//! `replay pause` and `replay resume` against spawned workers: a pause stops
//! every worker (consuming and claiming) and survives a worker's restart; a
//! resume lets them finish the backlog; both are audited.
#![allow(clippy::unwrap_used)] // a test that cannot read its own database should fail loudly

use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};
use sqlx::PgPool;

const SKIPPED: &str = "SELECT count(*) FROM processed_events WHERE status = 'skipped'";

fn noted(n: usize) -> Vec<replay::wire::envelope::Event> {
    (0..n).map(|i| event("member.noted", json!({"n": i}))).collect()
}

#[sqlx::test]
async fn a_pause_stops_every_worker_until_resumed(pool: PgPool) {
    let world = World::new(pool).await;
    let _w1 = world.spawn_worker_process("w1", &[]);
    let _w2 = world.spawn_worker_process("w2", &[]);
    world.publish(&noted(50)).await;
    world.wait_for_count(SKIPPED, 50, Duration::from_secs(30)).await;

    let out = world.replay(&["pause", "--reason", "INC-50: wrong allocations", "--operator", "carol", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let answer: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(answer["workers_paused"], json!(["w1", "w2"]), "{answer}");
    assert_eq!(answer["workers_still_running"], json!([]));
    eprintln!("pause latency: {} ms", answer["latency_ms"]);

    // Nothing is taken while paused: not from the queue, not from the ledger,
    // not by a worker started during the pause.
    world.publish(&noted(20)).await;
    sqlx::query(
        "INSERT INTO processed_events (event_id, event_type, payload, occurred_at, status) VALUES ('manual-1', 'member.noted', '{}', now(), 'pending')",
    )
    .execute(&world.pool)
    .await
    .unwrap();
    let _w3 = world.spawn_worker_process("w3", &[]);
    world
        .wait_for_count(
            "SELECT count(*) FROM replay_control.worker_heartbeats WHERE worker_id = 'w3' AND state = 'paused'",
            1,
            Duration::from_secs(20),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(world.queue_depth().await, 20);
    assert_eq!(world.scalar(SKIPPED).await, 50);
    assert_eq!(world.status_of("manual-1").await.unwrap().0, "pending");

    let out = world.replay(&["resume", "--reason", "fixed", "--operator", "dave"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("resumed: the pause of"), "{}", stdout_of(&out));
    world.wait_for_count(SKIPPED, 71, Duration::from_secs(30)).await;
    assert_eq!(world.queue_depth().await, 0);

    let actions: Vec<(String, String)> =
        sqlx::query_as("SELECT action, operator FROM replay_control.audit_log ORDER BY id")
            .fetch_all(&world.pool)
            .await
            .unwrap();
    assert_eq!(actions, [("workers.pause".into(), "carol".into()), ("workers.resume".into(), "dave".into())]);
    let out = world.replay(&["resume", "--reason", "again"]).await;
    assert!(stdout_of(&out).contains("not paused: nothing to resume"), "{}", stdout_of(&out));
    world.cleanup().await;
}
