//! The load test of the fault suite: four worker processes, 100,000 events
//! published with `replay publish` while one worker is killed with SIGKILL
//! (and restarted, as a supervisor would) and the broker, a private node,
//! is restarted. Every published event must end applied exactly once.
//! Prints the figures (events, faults, lost, duplicated, time).
#![allow(clippy::unwrap_used)] // a test that cannot read its own database should fail loudly

use std::time::{Duration, Instant};

use crate::broker::PrivateBroker;
use crate::common::*;
use sqlx::PgPool;
use uuid::Uuid;

const EVENTS: usize = 100_000;
const CHUNK: usize = 10_000;
const WORKERS: usize = 4;

fn spawn(world: &World, n: usize) -> tokio::process::Child {
    world.spawn_worker_process(&format!("load-{n}"), &["--lease", "5s", "--batch-size", "500"])
}

/// Runs `replay publish --file` for these lines; the outbox keeps what the
/// broker does not confirm, so it exits 0 through a broker restart. Returns
/// whether the outbox was used.
pub(crate) async fn publish_lines(env: &[(&'static str, String)], lines: &[String]) -> bool {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), lines.join("\n")).unwrap();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(["publish", "--file", file.path().to_str().unwrap()])
        .envs(env.iter().cloned())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    // Every broker step is bounded, so a publish run ends; a hang is a bug.
    let out = tokio::time::timeout(Duration::from_secs(180), run).await.expect("a publish run hung").unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    stdout_of(&out).contains("kept in the outbox")
}

#[sqlx::test]
async fn four_workers_100k_events_a_kill_and_a_broker_restart_apply_each_event_once(pool: PgPool) {
    let _heavy = crate::broker::HEAVY.lock().await;
    let broker = PrivateBroker::start().await;
    let world = World::on_broker(pool, &broker.url).await;
    let started = Instant::now();
    let mut workers: Vec<_> = (0..WORKERS).map(|n| spawn(&world, n)).collect();
    let period = Uuid::new_v4();
    world.publish(&[period_opened(period)]).await;
    world.wait_for_count(PROCESSED, 1, Duration::from_secs(30)).await;

    let ids: Vec<Uuid> = (0..EVENTS).map(|_| Uuid::new_v4()).collect();
    let lines: Vec<String> = ids
        .iter()
        .map(|c| {
            serde_json::json!({"event_id": format!("load-{c}"), "event_type": "contribution.submitted",
                "payload": {"contribution_id": c, "member_id": Uuid::new_v4(), "period_id": period, "type": "labor", "amount": 10}})
            .to_string()
        })
        .collect();
    // How many publish runs have started: the broker restart is timed by it,
    // so it surely lands while events are still being published.
    let runs_started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let publisher = {
        let env = world.env();
        let lines = lines.clone();
        let runs_started = runs_started.clone();
        tokio::spawn(async move {
            let mut outboxed = 0;
            for chunk in lines.chunks(CHUNK) {
                runs_started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                outboxed += usize::from(publish_lines(&env, chunk).await);
            }
            outboxed
        })
    };

    // Fault 1: a worker killed mid-batch, restarted a second later.
    world.wait_for_count_at_least(PROCESSED, 20_000, Duration::from_secs(120)).await;
    workers[0].kill().await.unwrap();
    let killed_at = world.scalar(PROCESSED).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    workers[0] = spawn(&world, 0);

    // Fault 2: the broker restarts while events are published and consumed:
    // once the sixth of ten publish runs has started.
    let deadline = Instant::now() + Duration::from_secs(180);
    while runs_started.load(std::sync::atomic::Ordering::SeqCst) < 6 {
        assert!(Instant::now() < deadline, "the sixth publish run never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restarted_at = world.scalar(PROCESSED).await;
    assert!(!publisher.is_finished(), "the restart lands while publishing");
    let away = broker.restart().await;

    let outboxed_publishes = publisher.await.unwrap();
    assert!(outboxed_publishes >= 1, "a publish run met the restart and used the outbox");
    world.wait_for_count(PROCESSED, EVENTS as i64 + 1, Duration::from_secs(300)).await;
    world.wait_for_count("SELECT count(*) FROM replay_control.outbox", 0, Duration::from_secs(60)).await;
    let elapsed = started.elapsed();

    // The checker: every published event is lost, duplicated or fine; any
    // other row is unexpected.
    let published: Vec<String> = ids.iter().map(|c| format!("load-{c}")).collect();
    let (lost, duplicated, unexpected): (i64, i64, i64) = sqlx::query_as(
        "WITH published AS (SELECT unnest($1::text[]) AS event_id),
              effects AS (SELECT p.event_id, count(c.id) AS n
                            FROM published p
                            LEFT JOIN processed_events l ON l.event_id = p.event_id AND l.status = 'processed'
                            LEFT JOIN contributions c ON c.id = (l.payload->>'contribution_id')::uuid
                           GROUP BY p.event_id)
         SELECT (SELECT count(*) FROM effects WHERE n = 0),
                (SELECT count(*) FROM effects WHERE n > 1),
                (SELECT count(*) FROM processed_events l
                  WHERE l.event_type = 'contribution.submitted' AND l.event_id <> ALL($1))",
    )
    .bind(&published)
    .fetch_one(&world.pool)
    .await
    .unwrap();
    let contributions = world.scalar("SELECT count(*) FROM contributions").await;
    let total: i64 = world.scalar("SELECT coalesce(sum(amount), 0)::bigint FROM contributions").await;
    println!(
        "load: {EVENTS} events, {WORKERS} workers; faults: kill -9 of load-0 at {killed_at} processed, broker restart at \
         {restarted_at} processed (away {:.1} s), {outboxed_publishes} of {} publish runs used the outbox; \
         lost {lost}, duplicated {duplicated}, unexpected {unexpected}; {:.1} s in all",
        away.as_secs_f64(),
        EVENTS / CHUNK,
        elapsed.as_secs_f64()
    );
    assert_eq!((lost, duplicated, unexpected), (0, 0, 0));
    assert_eq!(contributions, EVENTS as i64, "one domain row per event");
    assert_eq!(total, 10 * EVENTS as i64, "amounts add up");
    // The effect probe: each published event applied exactly once.
    let published: Vec<&str> = published.iter().map(String::as_str).collect();
    let found = world.applications_of(&published, 1).await;
    assert_eq!((found.fewer.len(), found.more.len()), (0, 0), "{found:?}");
    world.assert_each_applied_once().await;
    assert_eq!(world.queue_depth().await, 0);
    for (n, worker) in workers.iter_mut().enumerate() {
        assert!(worker.try_wait().unwrap().is_none(), "worker load-{n} is alive");
    }
    world.cleanup().await;
}
