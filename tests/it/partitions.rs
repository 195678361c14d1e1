//! The partition count as operators meet it on the shared broker (which has
//! no consistent-hash exchange: the partitioned stream itself is tested in
//! the fault suite, on a private node that has it). The count is recorded by
//! the first process and every process started with another refuses to run,
//! declaring nothing; `replay publish` refuses a keyed type without its key
//! field; `replay topology repartition` refuses until the system is quiet.
#![allow(clippy::unwrap_used)] // a test that cannot read its own database should fail loudly

use std::time::Duration;

use crate::common::*;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

fn env_file(dir: &tempfile::TempDir, events: &[replay::wire::envelope::Event]) -> String {
    let path = dir.path().join("events.jsonl");
    let lines: Vec<String> = events
        .iter()
        .map(|e| json!({"event_id": e.event_id, "event_type": e.event_type, "payload": e.payload}).to_string())
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    path.to_str().unwrap().to_string()
}

#[sqlx::test]
async fn a_process_started_with_another_partition_count_refuses_and_declares_nothing(pool: PgPool) {
    let world = World::new(pool).await;
    let dir = tempfile::tempdir().unwrap();
    let file = env_file(&dir, &[period_opened(Uuid::new_v4())]);
    // The first process records the count it runs with: one.
    let out = world.replay(&["publish", "--file", &file]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(world.scalar("SELECT partitions::bigint FROM replay_control.partitioning").await, 1);
    assert_eq!(world.queue_depth().await, 1);

    for args in [vec!["worker", "--http", "off"], vec!["publish", "--file", &file]] {
        let out =
            tokio::time::timeout(Duration::from_secs(30), world.replay_with(&args, &[("REPLAY_PARTITIONS", "3")]))
                .await
                .expect("a refused process exits");
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("started with --partitions 3")
                && stderr.contains("the system runs 1 partition(s)")
                && stderr.contains("replay topology repartition --to 3"),
            "{args:?}: {stderr}"
        );
    }
    // Nothing was published or declared with the wrong count.
    assert_eq!(world.queue_depth().await, 1, "the refused publish sent nothing");
    let connection = replay::wire::transport::connect(&world.endpoints.amqp_url, "test").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let passive = lapin::options::ExchangeDeclareOptions { passive: true, ..Default::default() };
    let hash = world.endpoints.hash_exchange();
    let found = channel
        .exchange_declare(
            hash.as_str().into(),
            lapin::ExchangeKind::Custom("x-consistent-hash".into()),
            passive,
            Default::default(),
        )
        .await;
    assert!(found.is_err(), "no hash exchange was declared by the refused processes");
    let _ = connection.close(200, "looked".into()).await;
    world.cleanup().await;
}

#[sqlx::test]
async fn publish_with_partitions_refuses_a_keyed_event_without_its_key_field(pool: PgPool) {
    let world = World::new(pool).await;
    let dir = tempfile::tempdir().unwrap();
    let period = Uuid::new_v4();
    let contribution = Uuid::new_v4();
    let events = [
        submitted(contribution, Uuid::new_v4(), period, 5),
        // A decision that does not name its period: unkeyed, it could land
        // in another partition than the period's close.
        approved(contribution),
    ];
    let file = env_file(&dir, &events);
    let out = world.replay_with(&["publish", "--file", &file], &[("REPLAY_PARTITIONS", "4")]).await;
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("contribution.approved")
            && stderr.contains("number 2 of the input")
            && stderr.contains("no payload field period_id")
            && stderr.contains("Nothing was published"),
        "{stderr}"
    );
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.partitioning").await, 0, "nothing recorded");
    assert_eq!(world.queue_depth().await, 0);
    world.cleanup().await;
}

#[sqlx::test]
async fn repartition_refuses_until_the_workers_are_paused_and_stopped(pool: PgPool) {
    let world = World::new(pool).await;
    let mut worker = world.spawn_worker_process("w1", &[]);
    world.publish(&[period_opened(Uuid::new_v4())]).await;
    world.wait_for_count(PROCESSED, 1, Duration::from_secs(30)).await;
    let repartition = ["topology", "repartition", "--to", "2", "--reason", "INC-95: more throughput"];

    let out = world.replay(&repartition).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("the workers are not paused: run `replay pause"), "{}", stderr_of(&out));

    let out = world.replay(&["pause", "--reason", "INC-95"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let out = world.replay(&repartition).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("worker(s) w1 still report in: stop every worker first"), "{}", stderr_of(&out));
    worker.kill().await.unwrap();
    // Its heartbeat goes quiet; the queue is empty; then only the broker is
    // left to say no: the shared one has no consistent-hash exchange.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let out = world.replay(&repartition).await;
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rabbitmq-plugins enable rabbitmq_consistent_hash_exchange"), "{stderr}");
    assert_eq!(
        world.scalar("SELECT count(*) FROM replay_control.audit_log WHERE action = 'topology.repartition'").await,
        0,
        "a repartition that did not happen is not audited"
    );
    assert_eq!(world.scalar("SELECT partitions::bigint FROM replay_control.partitioning").await, 1);
    world.publish(&[period_opened(Uuid::new_v4())]).await;
    assert_eq!(world.queue_depth().await, 1, "the old queue is still there, still bound");
    world.cleanup().await;
}
