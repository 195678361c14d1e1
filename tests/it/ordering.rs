//! The ordering contract: events applied in the order they were published,
//! by one active worker per partition with hot standbys, and a failed event
//! holding the later events of its sequence key.
#![allow(clippy::unwrap_used)] // a test that cannot read its own database should fail loudly

use std::time::{Duration, Instant};

use crate::common::*;
use futures::StreamExt;
use replay::wire::envelope::Event;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

async fn leader(world: &World) -> (String, i64) {
    sqlx::query_as("SELECT worker_id, epoch FROM replay_control.partition_leaders")
        .fetch_optional(&world.pool)
        .await
        .unwrap()
        .unwrap_or_default()
}

async fn closes_with_workers(pool: PgPool, workers: usize) {
    let world = World::new(pool).await;
    let (events, periods) = closing_periods(6, 400);
    let _workers: Vec<_> =
        (0..workers).map(|i| world.spawn_worker_process(&format!("w{i}"), &["--batch-size", "100"])).collect();
    world.publish(&events).await;
    world.wait_for_count(PROCESSED, events.len() as i64, Duration::from_secs(120)).await;
    assert_allocations_right(&world, &periods).await;
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events").await, events.len() as i64);
    // One worker applied everything; the others stood by.
    let appliers = world.scalar("SELECT count(DISTINCT worker_id) FROM replay_control.partition_leaders").await;
    assert_eq!(appliers, 1);
    world
        .wait_for_count(
            "SELECT count(*) FROM replay_control.worker_heartbeats WHERE state = 'standby'",
            workers as i64 - 1,
            Duration::from_secs(10),
        )
        .await;
    world.cleanup().await;
}

#[sqlx::test]
async fn periods_closed_back_to_back_with_two_workers_allocate_every_approval(pool: PgPool) {
    closes_with_workers(pool, 2).await;
}

#[sqlx::test]
async fn periods_closed_back_to_back_with_four_workers_allocate_every_approval(pool: PgPool) {
    closes_with_workers(pool, 4).await;
}

#[sqlx::test]
async fn one_worker_applies_approvals_stamped_in_the_same_second_before_their_close(pool: PgPool) {
    // The one-worker defect: events sorted by timestamp, ties by random id.
    let world = World::new(pool).await;
    let at = chrono::Utc::now();
    let (events, periods) = closing_periods(6, 400);
    let same_second: Vec<Event> = events.into_iter().map(|e| Event { occurred_at: at, ..e }).collect();
    world.publish(&same_second).await;
    let worker = world.start_worker(world.worker_config("w1"));
    world.wait_for_count(PROCESSED, same_second.len() as i64, Duration::from_secs(60)).await;
    worker.stop().await;
    assert_allocations_right(&world, &periods).await;
    world.cleanup().await;
}

#[sqlx::test]
async fn a_standby_takes_over_when_the_active_worker_is_killed(pool: PgPool) {
    let world = World::new(pool).await;
    let (events, periods) = closing_periods(4, 3000);
    let mut first = world.spawn_worker_process("w0", &["--batch-size", "50"]);
    world.wait_for_count("SELECT count(*) FROM replay_control.partition_leaders", 1, Duration::from_secs(20)).await;
    let _standby = world.spawn_worker_process("w1", &["--batch-size", "50"]);
    world
        .wait_for_count(
            "SELECT count(*) FROM replay_control.worker_heartbeats WHERE worker_id = 'w1' AND state = 'standby'",
            1,
            Duration::from_secs(20),
        )
        .await;
    world.publish(&events).await;
    wait_until_more_processed(&world, 2000).await;
    assert_eq!(leader(&world).await, ("w0".to_string(), 1));
    signal(&first, "-KILL");
    let killed = Instant::now();
    let _ = first.wait().await;
    let before = world.scalar(PROCESSED).await;
    // The takeover: the standby leads and applies.
    let deadline = Instant::now() + Duration::from_secs(60);
    while leader(&world).await.0 != "w1" {
        assert!(Instant::now() < deadline, "the standby never took over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let led = killed.elapsed();
    wait_until_more_processed(&world, before).await;
    eprintln!(
        "takeover: standby leading {} ms after kill -9, applying {} ms after",
        led.as_millis(),
        killed.elapsed().as_millis()
    );
    // The killed worker comes back, as a supervisor restarts it: as a standby.
    let _back = world.spawn_worker_process("w0", &["--batch-size", "50"]);
    world.wait_for_count(PROCESSED, events.len() as i64, Duration::from_secs(120)).await;
    assert_eq!(leader(&world).await, ("w1".to_string(), 2));
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events").await, events.len() as i64);
    assert_allocations_right(&world, &periods).await;
    assert_eq!(world.queue_depth().await, 0);
    world.cleanup().await;
}

#[sqlx::test]
async fn sigterm_of_the_active_worker_hands_over_what_it_held(pool: PgPool) {
    let world = World::new(pool).await;
    let (events, periods) = closing_periods(4, 3000);
    let first = world.spawn_worker_process("w0", &["--batch-size", "50", "--prefetch", "1000"]);
    world.wait_for_count("SELECT count(*) FROM replay_control.partition_leaders", 1, Duration::from_secs(20)).await;
    let _standby = world.spawn_worker_process("w1", &["--batch-size", "50"]);
    world.publish(&events).await;
    wait_until_more_processed(&world, 2000).await;
    signal(&first, "-TERM");
    let output = first.wait_with_output().await.unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    world.wait_for_count(PROCESSED, events.len() as i64, Duration::from_secs(120)).await;
    assert_eq!(leader(&world).await.0, "w1");
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events").await, events.len() as i64);
    assert_allocations_right(&world, &periods).await;
    world.cleanup().await;
}

/// A pause hands back what the leader holds (cancel, apply what the broker
/// already sent, ack, close); a resume then goes on in order, with a standby
/// ready to lead. Twice, mid-stream.
#[sqlx::test]
async fn a_pause_and_a_resume_mid_stream_keep_every_close_behind_its_approvals(pool: PgPool) {
    let world = World::new(pool).await;
    let (events, periods) = closing_periods(4, 3000);
    let _workers: Vec<_> = (0..2)
        .map(|i| world.spawn_worker_process(&format!("w{i}"), &["--batch-size", "50", "--prefetch", "1000"]))
        .collect();
    world.publish(&events).await;
    for round in 1..=2 {
        wait_until_more_processed(&world, 3000 * round).await;
        let out = world.replay(&["pause", "--reason", "INC-11: mid-stream", "--json"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
        let paused_at = world.scalar(PROCESSED).await;
        assert!(paused_at < events.len() as i64, "round {round}: paused mid-stream, not after the end");
        let out = world.replay(&["resume", "--reason", "go on"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    }
    world.wait_for_count(PROCESSED, events.len() as i64, Duration::from_secs(120)).await;
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events").await, events.len() as i64);
    assert_allocations_right(&world, &periods).await;
    world.cleanup().await;
}

/// A trigger that fails every update of one contribution while a flag row
/// exists: a transient failure the test ends when it chooses.
async fn fail_updates_of(world: &World, contribution: Uuid) {
    for statement in [
        "CREATE TABLE test_faults (contribution_id uuid PRIMARY KEY)".to_string(),
        format!("INSERT INTO test_faults VALUES ('{contribution}')"),
        "CREATE FUNCTION test_fail() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF EXISTS (SELECT 1 FROM test_faults WHERE contribution_id = NEW.id) THEN
                 RAISE EXCEPTION 'injected fault for contribution %', NEW.id;
             END IF;
             RETURN NEW;
         END $$"
            .to_string(),
        "CREATE TRIGGER test_fail BEFORE UPDATE ON contributions FOR EACH ROW EXECUTE FUNCTION test_fail()".to_string(),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&world.pool).await.unwrap();
    }
}

/// Publishes a period with two approvals (10 and 7) and its close, where
/// every update of the second approval's contribution fails until
/// `test_faults` is emptied; returns that approval.
async fn publish_a_close_behind_a_failing_approval(world: &World) -> Event {
    let (period, member) = (Uuid::new_v4(), Uuid::new_v4());
    let (good, flaky) = (Uuid::new_v4(), Uuid::new_v4());
    fail_updates_of(world, flaky).await;
    let flaky_approval = approved(flaky);
    world
        .publish(&[
            period_opened(period),
            submitted(good, member, period, 10),
            submitted(flaky, member, period, 7),
            approved(good),
            flaky_approval.clone(),
            event("period.close", json!({"period_id": period})),
        ])
        .await;
    flaky_approval
}

const CLOSE_HELD: &str =
    "SELECT count(*) FROM processed_events WHERE event_type = 'period.close' AND sequence_state = 'held'";

#[sqlx::test]
async fn a_close_waits_for_an_approval_that_fails_transiently(pool: PgPool) {
    let world = World::new(pool).await;
    let flaky_approval = publish_a_close_behind_a_failing_approval(&world).await;
    let mut config = world.worker_config("w1");
    config.retry.max_attempts = 50;
    let worker = world.start_worker(config);
    world.wait_for_count(CLOSE_HELD, 1, Duration::from_secs(20)).await;
    assert_eq!(world.scalar("SELECT count(*) FROM allocations").await, 0, "the close has not computed");
    // The approval's own status flips between pending and processing as it
    // retries, so it is named by the id it was published with.
    let listed = world.replay(&["dlq", "list"]).await;
    let held_behind = format!("held behind {}", flaky_approval.event_id);
    assert!(stdout_of(&listed).contains(&held_behind), "{}", stdout_of(&listed));

    // The fault ends: the approval goes through, then the close.
    sqlx::query("DELETE FROM test_faults").execute(&world.pool).await.unwrap();
    world.wait_for_count(PROCESSED, 6, Duration::from_secs(30)).await;
    worker.stop().await;
    let amount: String =
        sqlx::query_scalar("SELECT amount::text FROM allocations").fetch_one(&world.pool).await.unwrap();
    assert_eq!(amount, "17.00", "both approvals counted");
    world.cleanup().await;
}

#[sqlx::test]
async fn a_close_held_behind_a_failed_approval_is_released_by_replaying_it(pool: PgPool) {
    let world = World::new(pool).await;
    let flaky_approval = publish_a_close_behind_a_failing_approval(&world).await;
    let worker = world.start_worker(world.worker_config("w1"));
    world
        .wait_for_count("SELECT count(*) FROM processed_events WHERE status = 'error'", 1, Duration::from_secs(30))
        .await;
    assert_eq!(world.status_of(&flaky_approval.event_id).await.unwrap().0, "error");
    world.wait_for_count(CLOSE_HELD, 1, Duration::from_secs(5)).await;
    let status = world.replay(&["status"]).await;
    assert!(stdout_of(&status).contains("held behind"), "{}", stdout_of(&status));
    assert_eq!(world.scalar("SELECT count(*) FROM allocations").await, 0);

    // Fixed; replaying the approval releases the close behind it.
    sqlx::query("DELETE FROM test_faults").execute(&world.pool).await.unwrap();
    let desk = Desk::new();
    let plan = desk.plan(&world, &["--event-id", &flaky_approval.event_id, "--reason", "INC-7: approval fixed"]).await;
    let applied = desk.apply(&world, plan["plan_path"].as_str().unwrap(), &["--yes"]).await;
    assert_eq!(applied.status.code(), Some(0), "{}", stderr_of(&applied));
    world.wait_for_count(PROCESSED, 6, Duration::from_secs(30)).await;
    worker.stop().await;
    let amount: String =
        sqlx::query_scalar("SELECT amount::text FROM allocations").fetch_one(&world.pool).await.unwrap();
    assert_eq!(amount, "17.00");
    assert_eq!(world.scalar(CLOSE_HELD).await, 0);
    world.cleanup().await;
}

#[sqlx::test]
async fn an_approval_published_before_its_submission_holds_nothing_and_counts_at_the_close(pool: PgPool) {
    let world = World::new(pool).await;
    let (period, member) = (Uuid::new_v4(), Uuid::new_v4());
    let (early, other) = (Uuid::new_v4(), Uuid::new_v4());
    let early_approval = approved(early);
    let submission = submitted(early, member, period, 5);
    // The producer sent the approval before its submission, all before the close.
    world
        .publish(&[
            period_opened(period),
            submitted(other, member, period, 10),
            early_approval.clone(),
            submission.clone(),
            approved(other),
            event("period.close", json!({"period_id": period})),
        ])
        .await;
    let worker = world.start_worker(world.worker_config("w1"));
    world.wait_for_count(PROCESSED, 6, Duration::from_secs(20)).await;
    worker.stop().await;
    // The submission was not held behind the approval waiting for it, and the
    // approval was applied before the close, which counted it.
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events WHERE sequence_state IS NOT NULL").await, 0);
    let amount: String =
        sqlx::query_scalar("SELECT amount::text FROM allocations").fetch_one(&world.pool).await.unwrap();
    assert_eq!(amount, "15.00");
    assert_eq!(world.status_of(&early_approval.event_id).await.unwrap().1, 0, "no failure counted");
    world.cleanup().await;
}

#[sqlx::test]
async fn a_message_redelivered_past_the_delivery_limit_ends_in_dead_letters(pool: PgPool) {
    let world = World::new(pool).await;
    world.publish_raw("contribution.submitted", b"{\"crashes\": \"every worker\"}").await;
    // A consumer that gives the message back unacked, again and again, as a
    // worker that dies holding it would.
    let connection = replay::wire::transport::connect(&world.endpoints.amqp_url, "test crasher").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut consumer = channel
        .basic_consume(
            world.endpoints.queue.as_str().into(),
            "crasher".into(),
            lapin::options::BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let mut deliveries = 0;
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await {
        deliveries += 1;
        delivery.nack(lapin::options::BasicNackOptions { requeue: true, ..Default::default() }).await.unwrap();
    }
    let _ = connection.close(200, "done".into()).await;
    assert_eq!(
        deliveries,
        replay::wire::transport::DELIVERY_LIMIT + 1,
        "handed out until the limit, then dead-lettered"
    );

    let worker = world.start_worker(world.worker_config("w1"));
    world.wait_for_count("SELECT count(*) FROM dead_letters", 1, Duration::from_secs(20)).await;
    worker.stop().await;
    let (routing_key, reason, body): (String, String, Vec<u8>) =
        sqlx::query_as("SELECT routing_key, reason, body FROM dead_letters").fetch_one(&world.pool).await.unwrap();
    assert_eq!(routing_key, "contribution.submitted");
    assert!(reason.contains("more than 20 times without an ack"), "{reason}");
    assert_eq!(body, b"{\"crashes\": \"every worker\"}");
    assert_eq!(world.queue_depth().await, 0);
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events").await, 0);
    world.cleanup().await;
}

#[sqlx::test]
async fn topology_migrate_moves_a_classic_queue_losing_and_reordering_nothing(pool: PgPool) {
    let world = World::new(pool).await;
    // The queue as the engine declared it before ordering: classic, no arguments.
    let connection = replay::wire::transport::connect(&world.endpoints.amqp_url, "test old topology").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = world.endpoints.queue.as_str();
    channel.queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default()).await.unwrap();
    let durable = lapin::options::QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(queue.into(), durable, lapin::types::FieldTable::default()).await.unwrap();
    channel
        .queue_bind(
            queue.into(),
            world.endpoints.exchange.as_str().into(),
            "#".into(),
            lapin::options::QueueBindOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let (events, periods) = closing_periods(3, 300);
    let (before, during) = events.split_at(events.len() / 2);
    world.publish(before).await;
    // A hand-published event (no id, no type property) survives the move too.
    let member = Uuid::new_v4();
    world
        .publish_raw(
            "contribution.submitted",
            json!({"contribution_id": Uuid::new_v4(), "member_id": member, "period_id": periods[0], "type": "labor", "amount": 1})
                .to_string()
                .as_bytes(),
        )
        .await;

    let shown = world.replay(&["topology"]).await;
    assert!(stdout_of(&shown).contains("declared: DIFFERENT"), "{}", stdout_of(&shown));
    assert!(stdout_of(&shown).contains("x-queue-type"), "the broker names the difference: {}", stdout_of(&shown));
    // A worker of the old version still consumes: refused, nothing moved.
    let mut old_worker = channel
        .basic_consume(queue.into(), "old-worker".into(), Default::default(), lapin::types::FieldTable::default())
        .await
        .unwrap();
    let refused = world.replay(&["topology", "migrate"]).await;
    assert_eq!(refused.status.code(), Some(3), "{}", stderr_of(&refused));
    assert!(stderr_of(&refused).contains("consumer(s) still read queue"), "{}", stderr_of(&refused));
    let _ = tokio::time::timeout(Duration::from_millis(200), old_worker.next()).await;
    let _ = connection.close(200, "old worker stopped".into()).await;

    // Producers go on publishing while the queue moves.
    let producer = {
        let during: Vec<Event> = during.to_vec();
        let endpoints = world.endpoints.clone();
        tokio::spawn(async move {
            for chunk in during.chunks(50) {
                let connection = replay::wire::transport::connect(&endpoints.amqp_url, "test producer").await.unwrap();
                let channel = connection.create_channel().await.unwrap();
                let publisher = replay::wire::publisher::Publisher::new(channel, &endpoints.exchange).await.unwrap();
                publisher.publish_all(chunk, |_| {}).await.unwrap();
                let _ = connection.close(200, "published".into()).await;
            }
        })
    };
    let migrated = world.replay(&["topology", "migrate", "--json"]).await;
    assert_eq!(migrated.status.code(), Some(0), "{}", stderr_of(&migrated));
    producer.await.unwrap();
    let report: serde_json::Value = serde_json::from_str(&stdout_of(&migrated)).unwrap();
    assert!(
        report["moved"].as_u64().unwrap() > before.len() as u64,
        "the old queue and the hand-published one: {report}"
    );

    let worker = world.start_worker(world.worker_config("w1"));
    let all = events.len() as i64 + 1;
    world.wait_for_count(PROCESSED, all, Duration::from_secs(60)).await;
    worker.stop().await;
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events").await, all, "none lost, none doubled");
    assert_allocations_right(&world, &periods).await;
    let shown = world.replay(&["topology", "--json"]).await;
    let inspection: serde_json::Value = serde_json::from_str(&stdout_of(&shown)).unwrap();
    assert_eq!(inspection["state"]["state"], "as_wanted", "{inspection}");
    assert_eq!(inspection["draining"], json!([]), "the migration queues are drained and gone");
    world.cleanup().await;
}
