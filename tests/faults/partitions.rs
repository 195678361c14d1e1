//! Partitions on a private RabbitMQ node with the consistent-hash exchange
//! (never the shared broker): four partition queues, five workers (four
//! leaders and a standby), a dozen periods published back to back. One
//! leader is killed with SIGKILL mid-stream; a standby takes its partition
//! over. Then a replay of everything runs across the partitions and an
//! emergency stop takes it off every partition queue, and a second replay
//! runs to its end. Each time, every period's close sees every approval
//! published before it (the allocations add up) and nothing is applied
//! twice.
#![allow(clippy::unwrap_used)] // a test that cannot read its own database should fail loudly

use std::time::Duration;

use crate::broker::PrivateBroker;
use crate::common::*;
use crate::load::publish_lines;
use sqlx::PgPool;

const PARTITIONS: u16 = 4;
const WORKERS: usize = 5;
/// 12 × (2 × 150 + 2) events.
const PERIODS: usize = 12;
const CONTRIBUTIONS: usize = 150;
const CHUNK: usize = 1_000;

fn lines_of(events: &[replay::wire::envelope::Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            serde_json::json!({"event_id": e.event_id, "event_type": e.event_type, "payload": e.payload}).to_string()
        })
        .collect()
}

async fn leaders(world: &World) -> Vec<(String, String, i64)> {
    sqlx::query_as("SELECT partition, worker_id, epoch FROM replay_control.partition_leaders ORDER BY partition")
        .fetch_all(&world.pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn four_partitions_keep_each_periods_order_through_a_kill_a_replay_and_an_emergency_stop(pool: PgPool) {
    let _heavy = crate::broker::HEAVY.lock().await;
    let broker = PrivateBroker::start_with_hash_exchange().await;
    let world = World::partitioned(pool, &broker.url, PARTITIONS).await;
    let dir = tempfile::tempdir().unwrap();
    let (plans, backups) = (dir.path().join("plans"), dir.path().join("backups"));
    let mut workers: Vec<_> = (0..WORKERS)
        .map(|n| world.spawn_worker_process(&format!("p-{n}"), &["--lease", "5s", "--batch-size", "200"]))
        .collect();
    let (events, periods) = closing_periods(PERIODS, CONTRIBUTIONS);
    let total = events.len() as i64;
    let publisher = {
        let (env, lines) = (world.env(), lines_of(&events));
        tokio::spawn(async move {
            for chunk in lines.chunks(CHUNK) {
                publish_lines(&env, chunk).await;
            }
        })
    };

    // Mid-stream, one partition's leader dies without a word.
    world.wait_for_count_at_least(PROCESSED, 800, Duration::from_secs(120)).await;
    let before = leaders(&world).await;
    assert_eq!(before.len(), usize::from(PARTITIONS), "every partition has a leader: {before:?}");
    let (partition, victim, epoch) = before[1].clone();
    let killed: usize = victim.trim_start_matches("p-").parse().unwrap();
    workers[killed].kill().await.unwrap();
    publisher.await.unwrap();
    world.wait_for_count(PROCESSED, total, Duration::from_secs(300)).await;

    // Spread over the four partitions, in order within each, once each.
    let spread = world.scalar("SELECT count(DISTINCT partition_index) FROM processed_events").await;
    assert_eq!(spread, i64::from(PARTITIONS), "the periods' keys spread over every partition");
    assert_allocations_right(&world, &periods).await;
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events").await, total);
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events WHERE status <> 'processed'").await, 0);
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.unkeyed_events").await, 0, "every event had its key");
    let after = leaders(&world).await;
    let taken = after.iter().find(|(p, ..)| *p == partition).unwrap();
    assert!(taken.1 != victim && taken.2 > epoch, "a standby took {partition} over from {victim}: {after:?}");
    assert_eq!(world.queue_depth().await, 0);

    // A replay across the partitions, stopped mid-way: the stop takes the
    // replay's messages off every partition queue and restores.
    let domain_before = world.domain_digest().await;
    let plan = world.plan_all(&plans, "INC-90").await;
    let apply = world.spawn_apply(&plan, 100, &backups);
    world
        .wait_for_count(
            "SELECT count(*) FROM replay_control.replay_runs WHERE published >= 100",
            1,
            Duration::from_secs(60),
        )
        .await;
    let out =
        world.replay(&["emergency-stop", "--plan", &plan, "--reason", "INC-90: wrong totals", "--yes", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout_of(&out), stderr_of(&out));
    let out = apply.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(4), "the apply stops: {}", stderr_of(&out));
    assert_eq!(world.queue_depth().await, 0, "none of the replay's messages is left in any partition queue");
    assert_eq!(world.domain_digest().await, domain_before, "the pre-replay state is back");
    let out = world.replay(&["resume", "--reason", "INC-90 understood"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));

    // A replay across the partitions, to its end: every row processed once
    // more, each period's close again after its approvals.
    let plan = world.plan_all(&plans, "INC-91").await;
    let out = world.replay(&["apply", &plan, "--yes", "--backup-dir", backups.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let replayed = "SELECT count(*) FROM processed_events p JOIN replay_history h ON h.ledger_id = p.id
          WHERE h.plan_id = (SELECT plan_id FROM replay_control.replay_runs ORDER BY started_at DESC LIMIT 1)
            AND p.status = 'processed'";
    world.wait_for_count(replayed, total, Duration::from_secs(300)).await;
    assert_allocations_right(&world, &periods).await;
    assert_eq!(world.domain_digest().await, domain_before, "a replay of what was applied changes nothing");
    assert_eq!(world.queue_depth().await, 0);
    for (n, worker) in workers.iter_mut().enumerate() {
        if n != killed {
            assert!(worker.try_wait().unwrap().is_none(), "worker p-{n} is alive");
        }
    }
    for mut worker in workers {
        let _ = worker.kill().await;
    }
    world.cleanup().await;
}

/// Publishes `body` straight into `queue` through the default exchange.
async fn publish_into(world: &World, queue: &str, body: &[u8]) {
    use lapin::options::BasicPublishOptions;
    let connection = replay::wire::transport::connect(&world.endpoints.amqp_url, "test").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), body, Default::default())
        .await
        .unwrap()
        .await
        .unwrap();
    let _ = connection.close(200, "published".into()).await;
}

async fn stop_gracefully(worker: &mut tokio::process::Child) {
    let pid = worker.id().unwrap().to_string();
    let status = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    assert!(status.success());
    let ended =
        tokio::time::timeout(Duration::from_secs(30), worker.wait()).await.expect("the worker stops on SIGTERM");
    assert!(ended.unwrap().success(), "a worker stopped by SIGTERM exits 0");
}

#[sqlx::test]
async fn two_partitions_become_four_through_a_checked_repartition_and_nothing_unkeyed_or_dead_is_lost(pool: PgPool) {
    let _heavy = crate::broker::HEAVY.lock().await;
    let broker = PrivateBroker::start_with_hash_exchange().await;
    let mut world = World::partitioned(pool, &broker.url, 2).await;
    let mut worker = world.spawn_worker_process("r-0", &[]);

    // Two partitions: periods closed, an event without a key (a foreign
    // producer's), and a message the broker dead-lettered in the second
    // partition.
    let (first, mut periods) = closing_periods(4, 20);
    assert!(!publish_lines(&world.env(), &lines_of(&first)).await, "published, not kept");
    let unkeyed = period_opened(uuid::Uuid::new_v4());
    world.publish(std::slice::from_ref(&unkeyed)).await;
    let second_dead_letters = format!("{}.p1.dead-letters", world.endpoints.queue);
    publish_into(&world, &second_dead_letters, b"not an event").await;
    let total = first.len() as i64 + 1;
    world.wait_for_count(PROCESSED, total, Duration::from_secs(120)).await;
    world
        .wait_for_count(
            &format!("SELECT count(*) FROM dead_letters WHERE reason LIKE '%{second_dead_letters}%'"),
            1,
            Duration::from_secs(30),
        )
        .await;
    assert_allocations_right(&world, &periods).await;
    let unkeyed_at: i64 = world
        .scalar(&format!(
            "SELECT partition_index::bigint FROM processed_events WHERE event_id = '{}'",
            unkeyed.event_id
        ))
        .await;
    assert_eq!(
        world
            .scalar(&format!("SELECT events FROM replay_control.unkeyed_events WHERE partition_index = {unkeyed_at}"))
            .await,
        1,
        "the unkeyed event is counted in the partition that applied it"
    );
    let status = world.replay(&["status"]).await;
    assert!(
        stdout_of(&status).contains(&format!("partition {unkeyed_at}: 1 event(s) arrived without a partition key")),
        "{}",
        stdout_of(&status)
    );

    // The checked move: pause, stop the worker, repartition.
    let out = world.replay(&["pause", "--reason", "grow to four partitions"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    stop_gracefully(&mut worker).await;
    let out = world.replay(&["topology", "repartition", "--to", "4", "--reason", "grow to four partitions"]).await;
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout_of(&out), stderr_of(&out));
    assert!(stdout_of(&out).contains("repartitioned: 2 -> 4 partition(s)"), "{}", stdout_of(&out));
    assert!(stdout_of(&out).contains("--partitions 4"), "says what to start next: {}", stdout_of(&out));
    assert_eq!(world.scalar("SELECT partitions::bigint FROM replay_control.partitioning").await, 4);
    assert_eq!(
        world.scalar("SELECT count(*) FROM replay_control.audit_log WHERE action = 'topology.repartition'").await,
        1
    );
    let out = world.replay(&["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));

    // The old count is refused from now on; the new one runs.
    let old = world.replay_with(&["worker", "--id", "old", "--http", "off"], &[("REPLAY_PARTITIONS", "2")]);
    let out =
        tokio::time::timeout(Duration::from_secs(60), old).await.expect("a worker with the old count refuses at once");
    assert_eq!(out.status.code(), Some(1), "a worker with the old count refuses: {}", stderr_of(&out));
    assert!(stderr_of(&out).contains("--partitions 2"), "{}", stderr_of(&out));
    world.endpoints.partitions = 4;
    let mut workers: Vec<_> = (0..2).map(|n| world.spawn_worker_process(&format!("r-{n}"), &[])).collect();
    let out = world.replay(&["resume", "--reason", "four partitions"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let (second, more) = closing_periods(12, 20);
    assert!(!publish_lines(&world.env(), &lines_of(&second)).await, "published, not kept");
    periods.extend(more);
    world.wait_for_count(PROCESSED, total + second.len() as i64, Duration::from_secs(180)).await;
    assert_allocations_right(&world, &periods).await;
    assert!(
        world
            .scalar(&format!("SELECT count(*) FROM processed_events WHERE id > {total} AND partition_index >= 2"))
            .await
            > 0,
        "the new partitions apply events"
    );
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events WHERE status <> 'processed'").await, 0);
    assert_eq!(world.queue_depth().await, 0);
    for mut worker in workers.drain(..) {
        let _ = worker.kill().await;
    }
    world.cleanup().await;
}
