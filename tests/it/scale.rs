//! An apply of a large plan with the brake pulled in every phase: an on-call
//! `replay pause` during the backup, the reset and the republish takes
//! effect within a second (no control action waits behind the apply's data
//! work), each stops the apply resumably (exit 4), and the apply resumed
//! after the last of them processes every row exactly once, with one backup,
//! one apply entry, and an audit chain that verifies.
#![allow(clippy::unwrap_used)] // a test that cannot read its own database should fail loudly

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;
use sqlx::PgPool;

/// Plan rows: many reset chunks.
const ROWS: i64 = 20_000;

/// Fills the ledger with `ROWS` processed `period.opened` events (each its
/// own period, so none waits behind another), each applied once by the
/// probe's count, and adds ballast so that `pg_dump` takes seconds.
async fn seed_large(world: &World) {
    sqlx::query(
        "INSERT INTO processed_events (event_id, event_type, payload, occurred_at, status, processed_at)
         SELECT 'opened-' || i, 'period.opened',
                jsonb_build_object('period_id', gen_random_uuid(), 'start_date', '2026-01-01', 'end_date', '2026-03-31'),
                timestamptz '2026-01-01' + make_interval(secs => i), 'processed', now()
           FROM generate_series(1, $1::bigint) i",
    )
    .bind(ROWS)
    .execute(&world.pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO effect_probe (event_id, event_type) SELECT event_id, event_type FROM processed_events")
        .execute(&world.pool)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE ballast AS SELECT i, repeat(md5(i::text), 8) AS pad FROM generate_series(1, 600000) i")
        .execute(&world.pool)
        .await
        .unwrap();
}

/// `replay pause` as the on-call engineer runs it: it must take effect (every
/// worker paused, counted from the pause's own commit: `latency_ms`) within
/// a second, and the command return soon after (its process start and
/// connections, in a debug build on a busy machine, are not the brake).
async fn pause_within_a_second(world: &World, reason: &str) {
    let started = Instant::now();
    let out = world.replay(&["pause", "--reason", reason, "--operator", "carol", "--json"]).await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let answer: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(answer["workers_still_running"], serde_json::json!([]), "{answer}");
    let latency = answer["latency_ms"].as_u64().unwrap();
    assert!(latency < 1_000, "`replay pause` during {reason} took effect after {latency} ms: {answer}");
    assert!(took < Duration::from_secs(3), "`replay pause` during {reason} returned after {took:?}: {answer}");
    eprintln!("pause during {reason}: {} ms (command {} ms)", answer["latency_ms"], took.as_millis());
}

async fn resume(world: &World) {
    let out = world.replay(&["resume", "--reason", "go on", "--operator", "carol"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
}

/// Waits for the apply to exit, paused: exit 4, naming the pause and how to go on.
async fn stopped_by_the_pause(apply: tokio::process::Child, reason: &str) -> String {
    let out = tokio::time::timeout(Duration::from_secs(10), apply.wait_with_output())
        .await
        .expect("the paused apply exits")
        .unwrap();
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains(reason) && stderr.contains("run the same `replay apply` again to continue"), "{stderr}");
    stderr
}

/// Polls `sql` (one count) until it is at least 1.
async fn wait_until(world: &World, sql: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while world.scalar(sql).await < 1 {
        assert!(Instant::now() < deadline, "never saw {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[sqlx::test]
async fn a_pause_in_every_phase_of_a_large_apply_takes_effect_at_once_and_the_apply_resumes(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    seed_large(&world).await;
    // A pause takes effect once the batch in flight commits: a debug build's
    // batch of 500 on a loaded two-core machine can take most of the second
    // this test allows the pause (CI saw 961 ms). The brake under test is the
    // apply's; smaller batches keep the worker's share of the latency small.
    let mut config = world.worker_config("w1");
    config.batch_size = 100;
    let worker = world.start_worker(config);
    let plan = desk.plan(&world, &["--all", "--reason", "INC-12: at scale"]).await;
    let path = plan["plan_path"].as_str().unwrap();

    // 1. During the backup: pg_dump is stopped, nothing is recorded or kept.
    let apply = desk.spawn_apply(&world, path, "4000", &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while desk.backup_files().is_empty() {
        assert!(Instant::now() < deadline, "pg_dump never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pause_within_a_second(&world, "INC-12 backup").await;
    let stderr = stopped_by_the_pause(apply, "INC-12 backup").await;
    assert!(stderr.contains(&format!("0 of {ROWS} rows were reset")), "{stderr}");
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.replay_runs").await, 0);
    assert!(desk.backup_files().is_empty(), "the unfinished dump is removed: {:?}", desk.backup_files());
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events WHERE status <> 'processed'").await, 0);
    resume(&world).await;

    // 2. During the reset: a row lock holds one chunk, the pause lands, the
    // lock goes, and the reset stops at the next chunk.
    let mut holder = world.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM processed_events WHERE event_id = 'opened-8500' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let apply = desk.spawn_apply(&world, path, "4000", &[]);
    wait_until(
        &world,
        "SELECT count(*) FROM replay_control.replay_runs WHERE state = 'resetting' AND reset_rows >= 8000",
        "the reset reach the held row",
    )
    .await;
    pause_within_a_second(&world, "INC-12 reset").await;
    holder.rollback().await.unwrap();
    stopped_by_the_pause(apply, "INC-12 reset").await;
    let (state, reset_rows): (String, i64) = sqlx::query_as("SELECT state, reset_rows FROM replay_control.replay_runs")
        .fetch_one(&world.pool)
        .await
        .unwrap();
    assert_eq!(state, "resetting");
    // The held chunk (whatever its size) ends at or after the held row, 8500.
    assert!((8_500..ROWS).contains(&reset_rows), "stopped mid-reset, after the held chunk: {reset_rows}");
    let parked = world.scalar("SELECT count(*) FROM processed_events WHERE replay_plan IS NOT NULL").await;
    assert!(parked <= reset_rows, "no row beyond the reset's progress is reset ({parked} > {reset_rows})");
    assert_eq!(
        world.scalar("SELECT published FROM replay_control.replay_runs").await,
        world.queue_depth().await as i64 + world.scalar("SELECT count(*) FROM effect_probe").await - ROWS,
        "every confirmed event is queued or applied"
    );
    resume(&world).await;

    // 3. During the republish, paced so it is still going.
    let apply = desk.spawn_apply(&world, path, "4000", &[]);
    wait_until(
        &world,
        "SELECT count(*) FROM replay_control.replay_runs WHERE state = 'publishing' AND published > 0",
        "the republish",
    )
    .await;
    pause_within_a_second(&world, "INC-12 republish").await;
    stopped_by_the_pause(apply, "INC-12 republish").await;
    let published = world.scalar("SELECT published FROM replay_control.replay_runs").await;
    assert!(published < ROWS, "stopped mid-republish: {published}");
    resume(&world).await;

    // Resumed to the end: no second backup or apply entry, every row
    // processed exactly once more (the probe owes each two applications).
    let out = desk.apply(&world, path, &["--yes"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("(resumed)"), "{}", stdout_of(&out));
    world.wait_for_count(PROCESSED, ROWS, Duration::from_secs(120)).await;
    worker.stop().await;
    assert_eq!(world.effect_check().await, EffectCheck::default(), "each row applied once by the replay");
    assert_eq!(world.scalar("SELECT count(*) FROM effect_probe").await, 2 * ROWS);
    assert_eq!(world.scalar("SELECT count(*) FROM replay_history").await, ROWS, "each row reset once");
    assert_eq!(desk.backup_files().len(), 1, "one backup for the whole apply");
    assert_eq!(
        world.scalar("SELECT count(*) FROM replay_control.audit_log WHERE action = 'replay.apply'").await,
        1,
        "one apply entry"
    );
    let out = world.replay(&["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout_of(&out), stderr_of(&out));
    world.cleanup().await;
}
