//! The worker on a three-node RabbitMQ cluster (private nodes, never the
//! shared broker): the partition's quorum queue replicated on every node,
//! `AMQP_URL` listing all three. The node that leads the queue is stopped
//! mid-stream and started again: nothing is lost or applied twice, every
//! period's close still sees every approval published before it (publish
//! order kept: the allocations add up), and the workers are alive at the end.
#![allow(clippy::unwrap_used)] // a test that cannot read its own database should fail loudly

use std::time::{Duration, Instant};

use crate::broker::PrivateCluster;
use crate::common::*;
use crate::load::publish_lines;
use sqlx::PgPool;

/// Periods closed back to back, each with this many contributions
/// (submitted, then approved): 4 × (2 × 750 + 2) events.
const PERIODS: usize = 4;
const CONTRIBUTIONS: usize = 750;
const CHUNK: usize = 1_000;

#[sqlx::test]
async fn the_node_leading_the_queue_stopped_mid_stream_loses_nothing_and_keeps_the_order(pool: PgPool) {
    let _heavy = crate::broker::HEAVY.lock().await;
    let cluster = PrivateCluster::start().await;
    let world = World::on_broker(pool, &cluster.url()).await;
    let mut workers: Vec<_> = ["c-1", "c-2"]
        .iter()
        .map(|id| world.spawn_worker_process(id, &["--lease", "5s", "--batch-size", "200"]))
        .collect();
    let (events, periods) = closing_periods(PERIODS, CONTRIBUTIONS);
    let lines: Vec<String> = events
        .iter()
        .map(|e| {
            serde_json::json!({"event_id": e.event_id, "event_type": e.event_type, "payload": e.payload}).to_string()
        })
        .collect();
    let publisher = {
        let env = world.env();
        tokio::spawn(async move {
            for chunk in lines.chunks(CHUNK) {
                publish_lines(&env, chunk).await;
            }
        })
    };

    // Mid-stream, the node that leads the partition's queue goes away.
    world.wait_for_count_at_least(PROCESSED, 1_000, Duration::from_secs(120)).await;
    let leader = cluster.leader_of(&world.endpoints.queue);
    let stopped_at = world.scalar(PROCESSED).await;
    let away = Instant::now();
    cluster.nodes[leader].stop();
    // The stream goes on on the other two: a new leader, workers reconnected.
    world.wait_for_count_at_least(PROCESSED, stopped_at + 500, Duration::from_secs(120)).await;
    let new_leader = cluster.leader_of(&world.endpoints.queue);
    assert_ne!(new_leader, leader, "another node leads the queue");
    cluster.nodes[leader].start_again().await;
    let away = away.elapsed();

    publisher.await.unwrap();
    let total = events.len() as i64;
    world.wait_for_count(PROCESSED, total, Duration::from_secs(300)).await;
    world.wait_for_count("SELECT count(*) FROM replay_control.outbox", 0, Duration::from_secs(60)).await;
    println!(
        "cluster: {total} events; leader node {leader} stopped at {stopped_at} processed for {:.1} s, node {new_leader} took over",
        away.as_secs_f64()
    );
    // Publish order kept: each close saw every approval published before it.
    assert_allocations_right(&world, &periods).await;
    world.assert_each_applied_once().await;
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events").await, total);
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events WHERE status <> 'processed'").await, 0);
    assert_eq!(world.queue_depth().await, 0);
    for (n, worker) in workers.iter_mut().enumerate() {
        assert!(worker.try_wait().unwrap().is_none(), "worker c-{} is alive", n + 1);
    }
    for mut worker in workers {
        worker.kill().await.unwrap();
    }
    world.cleanup().await;
}
