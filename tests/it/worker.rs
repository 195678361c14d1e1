//! The worker, as the runbooks use it: events in, ledger rows and domain
//! effects out, exactly once, whatever the broker or the operator does.

#![allow(clippy::unwrap_used)] // a test that cannot read its own database should fail loudly

use std::time::Duration;

use crate::common::*;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test]
async fn events_published_before_any_worker_are_all_processed(pool: PgPool) {
    let world = World::new(pool).await;
    let (period, member) = (Uuid::new_v4(), Uuid::new_v4());
    let contribution = Uuid::new_v4();
    world.publish(&[period_opened(period), submitted(contribution, member, period, 40), approved(contribution)]).await;
    assert_eq!(world.queue_depth().await, 3, "events wait in the queue while no worker runs");

    let worker = world.start_worker(world.worker_config("w1"));
    world.wait_for_count(PROCESSED, 3, Duration::from_secs(20)).await;
    worker.stop().await;

    assert_eq!(world.queue_depth().await, 0, "the queue drained");
    assert_eq!(world.contribution_status(contribution).await, "approved");
    world.cleanup().await;
}

#[sqlx::test]
async fn duplicate_deliveries_change_nothing(pool: PgPool) {
    let world = World::new(pool).await;
    let period = Uuid::new_v4();
    let opened = period_opened(period);
    let contribution = submitted(Uuid::new_v4(), Uuid::new_v4(), period, 25);
    // The same event twice, and a hand-published id-less message twice.
    world.publish(&[opened.clone(), contribution.clone(), contribution.clone()]).await;
    let by_hand = json!({"contribution_id": Uuid::new_v4(), "member_id": Uuid::new_v4(), "period_id": period, "type": "labor", "amount": 5});
    let body = by_hand.to_string();
    world.publish_raw("contribution.submitted", body.as_bytes()).await;
    world.publish_raw("contribution.submitted", body.as_bytes()).await;

    let worker = world.start_worker(world.worker_config("w1"));
    world.wait_for_count(PROCESSED, 3, Duration::from_secs(20)).await;
    // A later redelivery of an event already processed is acked and ignored.
    world.publish(std::slice::from_ref(&contribution)).await;
    world.publish_raw("contribution.submitted", body.as_bytes()).await;
    wait_for_queue_drained(&world).await;
    // A stop returns what is not acked yet to the queue: an empty queue
    // after it means the worker settled both redeliveries.
    worker.stop().await;

    assert_eq!(world.queue_depth().await, 0, "duplicates were acked");
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events").await, 3);
    assert_eq!(world.scalar("SELECT count(*) FROM contributions").await, 2);
    let derived = replay::wire::envelope::derived_event_id("contribution.submitted", body.as_bytes());
    assert_eq!(world.status_of(&derived).await.map(|s| s.0).as_deref(), Some("processed"));
    // Three deliveries each of two events, one application each.
    world.assert_applied(&[opened, contribution], 1).await;
    let by_hand_applied =
        world.scalar(&format!("SELECT count(*) FROM effect_probe WHERE event_id = '{derived}'")).await;
    assert_eq!(by_hand_applied, 1, "the id-less message, delivered three times, applied once");
    world.assert_each_applied_once().await;
    world.cleanup().await;
}

/// Waits up to 10 s for the partition queue to hold no ready message.
async fn wait_for_queue_drained(world: &World) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let depth = world.queue_depth().await;
        if depth == 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the worker left {depth} messages in the queue for 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The probe itself: with the ledger's record of an event gone (as if the
/// worker had no dedup), a redelivery is applied a second time. The domain
/// cannot tell (the contribution handler ignores a known id, the ledger has
/// one row again); the probe can.
#[sqlx::test]
async fn the_effect_probe_sees_an_event_applied_twice_when_dedup_is_off(pool: PgPool) {
    let world = World::new(pool).await;
    let period = Uuid::new_v4();
    let contribution = submitted(Uuid::new_v4(), Uuid::new_v4(), period, 25);
    world.publish(&[period_opened(period), contribution.clone()]).await;
    let worker = world.start_worker(world.worker_config("w1"));
    world.wait_for_count(PROCESSED, 2, Duration::from_secs(20)).await;
    assert_eq!(world.effect_check().await, EffectCheck::default());

    sqlx::query("DELETE FROM processed_events WHERE event_id = $1")
        .bind(&contribution.event_id)
        .execute(&world.pool)
        .await
        .unwrap();
    world.publish(std::slice::from_ref(&contribution)).await;
    world.wait_for_count(PROCESSED, 2, Duration::from_secs(20)).await;
    worker.stop().await;

    // What the count-based checks see: nothing wrong.
    assert_eq!(world.scalar("SELECT count(*) FROM contributions").await, 1);
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events").await, 2);
    // What the probe sees.
    let found = world.applications(std::slice::from_ref(&contribution), 1).await;
    assert_eq!(found.more, vec![(contribution.event_id.clone(), 2)], "{found:?}");
    assert_eq!(world.effect_check().await, EffectCheck { doubled: 1, unapplied: 0, unrecorded: 0 });
    world.cleanup().await;
}

#[sqlx::test]
async fn a_failing_handler_is_retried_then_left_in_error(pool: PgPool) {
    let world = World::new(pool).await;
    // Approving a contribution that is never submitted: retried, then error.
    let orphan = approved(Uuid::new_v4());
    // A payload of the wrong shape: error at once, no retries.
    let malformed = event("period.opened", json!({"period_id": "not-a-uuid"}));
    let period = Uuid::new_v4();
    let fine = period_opened(period);
    world.publish(&[orphan.clone(), malformed.clone(), fine.clone()]).await;

    let worker = world.start_worker(world.worker_config("w1"));
    world
        .wait_for_count("SELECT count(*) FROM processed_events WHERE status = 'error'", 2, Duration::from_secs(20))
        .await;
    worker.stop().await;

    let (status, retries, error) = world.status_of(&orphan.event_id).await.unwrap();
    assert_eq!((status.as_str(), retries), ("error", 3), "three attempts, then error");
    let error = error.unwrap();
    assert!(error.contains("has not been submitted yet") && error.contains("gave up after 3 attempts"), "{error}");
    let (status, retries, error) = world.status_of(&malformed.event_id).await.unwrap();
    assert_eq!((status.as_str(), retries), ("error", 1), "an invalid payload is not retried");
    assert!(error.unwrap().contains("invalid payload"));
    assert_eq!(world.status_of(&fine.event_id).await.unwrap().0, "processed", "one failing event fails alone");
    let processed_at_set =
        world.scalar("SELECT count(*) FROM processed_events WHERE status = 'error' AND processed_at IS NOT NULL").await;
    assert_eq!(processed_at_set, 2, "failed rows carry processed_at, as the runbook's failed-events query expects");
    world.cleanup().await;
}

#[sqlx::test]
async fn poison_messages_are_dead_lettered_and_the_worker_goes_on(pool: PgPool) {
    let world = World::new(pool).await;
    world.publish_raw("contribution.submitted", b"{not json").await;
    world.publish_raw("contribution.submitted", br#"{"contribution_id":"a\u0000b"}"#).await;
    let mut config = world.worker_config("w1");
    config.max_message_bytes = 200;
    world.publish_raw("contribution.submitted", &[b' '; 300]).await;
    let period = Uuid::new_v4();
    world.publish(&[period_opened(period)]).await;

    let worker = world.start_worker(config);
    world.wait_for_count(PROCESSED, 1, Duration::from_secs(20)).await;
    worker.stop().await;

    let reasons: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT reason, body FROM dead_letters ORDER BY id").fetch_all(&world.pool).await.unwrap();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].0.contains("not JSON") && reasons[0].1 == b"{not json");
    assert!(reasons[1].0.contains("\\u0000"));
    assert!(reasons[2].0.contains("over the limit of 200 bytes"));
    assert_eq!(world.queue_depth().await, 0, "poison messages are acked");
    world.cleanup().await;
}

#[sqlx::test]
async fn pending_rows_are_picked_up_without_any_message(pool: PgPool) {
    let world = World::new(pool).await;
    let period = Uuid::new_v4();
    let opened = period_opened(period);
    world.publish(std::slice::from_ref(&opened)).await;
    let worker = world.start_worker(world.worker_config("w1"));
    world.wait_for_count(PROCESSED, 1, Duration::from_secs(20)).await;

    // An operator resets the row by hand, as the runbook does, and inserts one.
    sqlx::query("UPDATE processed_events SET status = 'pending', retry_count = 0, error_message = NULL, processed_at = NULL WHERE event_id = $1")
        .bind(&opened.event_id)
        .execute(&world.pool)
        .await
        .unwrap();
    let other = Uuid::new_v4();
    sqlx::query("INSERT INTO processed_events (event_id, event_type, payload, occurred_at, status) VALUES ('manual-1', 'period.opened', $1, now(), 'pending')")
        .bind(json!({"period_id": other, "start_date": "2026-04-01", "end_date": "2026-06-30"}))
        .execute(&world.pool)
        .await
        .unwrap();
    world.wait_for_count(PROCESSED, 2, Duration::from_secs(10)).await;
    worker.stop().await;

    assert_eq!(world.scalar("SELECT count(*) FROM allocation_periods").await, 2);
    assert_eq!(world.queue_depth().await, 0);
    world.cleanup().await;
}

#[sqlx::test]
async fn a_stale_processing_row_is_reclaimed_and_a_new_leader_takes_back_every_lease(pool: PgPool) {
    let world = World::new(pool).await;
    let period = Uuid::new_v4();
    // A worker died holding this row; its lease ran out a minute ago.
    sqlx::query(
        "INSERT INTO processed_events (event_id, event_type, payload, occurred_at, status, locked_by, next_attempt_at)
         VALUES ('stale-1', 'period.opened', $1, now(), 'processing', 'dead-worker', now() - interval '1 minute')",
    )
    .bind(json!({"period_id": period, "start_date": "2026-01-01", "end_date": "2026-03-31"}))
    .execute(&world.pool)
    .await
    .unwrap();
    // And one whose lease still runs: only a partition's leader claims, so
    // it was a leader's that is gone, and the next leader takes it back at
    // once instead of waiting an hour.
    sqlx::query(
        "INSERT INTO processed_events (event_id, event_type, payload, occurred_at, status, locked_by, next_attempt_at)
         VALUES ('live-1', 'period.opened', $1, now(), 'processing', 'old-leader', now() + interval '1 hour')",
    )
    .bind(json!({"period_id": Uuid::new_v4(), "start_date": "2026-01-01", "end_date": "2026-03-31"}))
    .execute(&world.pool)
    .await
    .unwrap();

    let worker = world.start_worker(world.worker_config("w1"));
    world.wait_for_count(PROCESSED, 2, Duration::from_secs(10)).await;
    worker.stop().await;

    let (status, retries, _) = world.status_of("stale-1").await.unwrap();
    assert_eq!((status.as_str(), retries), ("processed", 1), "the expired lease counts as one failed attempt");
    let (status, retries, _) = world.status_of("live-1").await.unwrap();
    assert_eq!((status.as_str(), retries), ("processed", 1), "taken back from the old leader at takeover");
    assert_eq!(world.scalar("SELECT count(*) FROM allocation_periods").await, 2);
    world.cleanup().await;
}

#[sqlx::test]
async fn events_arriving_out_of_order_end_up_applied(pool: PgPool) {
    let world = World::new(pool).await;
    let (period, member, contribution) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    // The approval first, then the submission, then the period it belongs to.
    let events = [approved(contribution), submitted(contribution, member, period, 10), period_opened(period)];
    world.publish(&events[..1]).await;
    world.publish(&events[1..2]).await;
    let mut config = world.worker_config("w1");
    config.retry.max_attempts = 10;
    // Long enough for the test to see both holds before the period arrives.
    config.retry.hold = Duration::from_secs(5);
    let worker = world.start_worker(config);
    world
        .wait_for_count(
            "SELECT count(*) FROM processed_events
              WHERE status = 'pending' AND retry_count = 0 AND error_message LIKE 'held: %'",
            2,
            Duration::from_secs(20),
        )
        .await;
    world.publish(&events[2..]).await;
    world.wait_for_count(PROCESSED, 3, Duration::from_secs(30)).await;
    worker.stop().await;

    assert_eq!(world.contribution_status(contribution).await, "approved");
    let counted: Vec<(String, i32, Option<String>)> =
        sqlx::query_as("SELECT event_type, retry_count, error_message FROM processed_events WHERE retry_count > 0")
            .fetch_all(&world.pool)
            .await
            .unwrap();
    assert_eq!(counted, vec![], "no failure counted");
    world.assert_applied(&events, 1).await;
    world.cleanup().await;
}

/// Two workers on one partition: one applies, the other stands by, and
/// when the first stops mid-stream the second takes over and finishes.
#[sqlx::test]
async fn two_workers_process_ten_thousand_events_once(pool: PgPool) {
    let world = World::new(pool).await;
    let period = Uuid::new_v4();
    let mut events = vec![period_opened(period)];
    events.extend(replay::bench::worker::contributions(period, 10_000).unwrap());
    world.publish(&events).await;

    let a = world.start_worker(world.worker_config("a"));
    world.wait_for_count("SELECT count(*) FROM replay_control.partition_leaders", 1, Duration::from_secs(20)).await;
    let b = world.start_worker(world.worker_config("b"));
    world
        .wait_for_count(
            "SELECT count(*) FROM replay_control.worker_heartbeats WHERE worker_id = 'b' AND state = 'standby'",
            1,
            Duration::from_secs(20),
        )
        .await;
    world.wait_for_count_at_least(PROCESSED, 2000, Duration::from_secs(60)).await;
    a.stop().await;
    let left_by_a = 10_001 - world.scalar(PROCESSED).await;
    assert!(left_by_a > 0, "a stopped mid-stream and left events for b");
    world.wait_for_count(PROCESSED, 10_001, Duration::from_secs(120)).await;
    let leader: (String, i64) = sqlx::query_as("SELECT worker_id, epoch FROM replay_control.partition_leaders")
        .fetch_one(&world.pool)
        .await
        .unwrap();
    assert_eq!(leader, ("b".to_string(), 2), "b took over from a and applied the {left_by_a} a left");
    b.stop().await;

    assert_eq!(world.scalar("SELECT count(*) FROM processed_events").await, 10_001);
    assert_eq!(world.scalar("SELECT count(*) FROM contributions").await, 10_000);
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events WHERE retry_count > 0").await, 0);
    assert_eq!(world.queue_depth().await, 0);
    world.assert_applied(&events, 1).await;
    world.assert_each_applied_once().await;
    world.cleanup().await;
}

#[sqlx::test]
async fn replaying_every_processed_event_leaves_the_domain_as_it_was(pool: PgPool) {
    let world = World::new(pool).await;
    let (period, member) = world.cooperative().await;
    let worker = world.start_worker(world.worker_config("w1"));
    world.wait_for_count(PROCESSED, 6, Duration::from_secs(20)).await;
    let mut events = world.paying_the_allocation().await;
    events.push(event("allocation.calculate", json!({"member_id": member, "period_id": period})));
    world.publish(&events).await;
    world.wait_for_count(PROCESSED, 10, Duration::from_secs(20)).await;
    let before = world.domain_digest().await;
    assert_eq!(world.scalar("SELECT count(*) FROM provider_calls").await, 1);

    sqlx::query("UPDATE processed_events SET status = 'pending', processed_at = NULL, next_attempt_at = now()")
        .execute(&world.pool)
        .await
        .unwrap();
    world.wait_for_count(PROCESSED, 10, Duration::from_secs(20)).await;
    worker.stop().await;

    // Each of the ten was applied again (the probe has two rows of each),
    // and applying it again left the domain tables as they were.
    assert_eq!(world.scalar("SELECT count(DISTINCT event_id) FROM effect_probe").await, 10);
    assert_eq!(
        world
            .scalar("SELECT count(*) FROM (SELECT 1 FROM effect_probe GROUP BY event_id HAVING count(*) <> 2) x")
            .await,
        0,
        "every event applied twice: once, and once more after its reset"
    );
    assert_eq!(world.domain_digest().await, before, "replaying processed events changed the domain tables");
    assert_eq!(world.scalar("SELECT count(*) FROM provider_calls").await, 1, "the provider is called once");
    let amount: String =
        sqlx::query_scalar("SELECT amount::text FROM allocations").fetch_one(&world.pool).await.unwrap();
    assert_eq!(amount, "70.00", "only approved contributions count");
    world.cleanup().await;
}

#[sqlx::test]
async fn a_failing_statement_fails_only_its_own_event(pool: PgPool) {
    let world = World::new(pool).await;
    let (period, member) = (Uuid::new_v4(), Uuid::new_v4());
    world.publish(&[period_opened(period)]).await;
    // One batch of contributions in which one overflows numeric(14,2): its
    // statement fails, the batch is redone with savepoints, and only it fails.
    let overflowing = event(
        "contribution.submitted",
        json!({"contribution_id": Uuid::new_v4(), "member_id": member, "period_id": period, "type": "labor", "amount": 1e15}),
    );
    let mut batch: Vec<_> = (0..5).map(|i| submitted(Uuid::new_v4(), member, period, i)).collect();
    batch.insert(2, overflowing.clone());
    world.publish(&batch).await;

    let worker = world.start_worker(world.worker_config("w1"));
    world
        .wait_for_count("SELECT count(*) FROM processed_events WHERE status = 'error'", 1, Duration::from_secs(20))
        .await;

    let (status, retries, error) = world.status_of(&overflowing.event_id).await.unwrap();
    assert_eq!((status.as_str(), retries), ("error", 3));
    assert!(error.unwrap().contains("numeric field overflow"));
    // The two published before it are applied; the two after it belong to its
    // period and wait behind it, in the same batch as it and ever since.
    assert_eq!(world.scalar(PROCESSED).await, 3, "the period and the two contributions before the failing one");
    assert_eq!(world.scalar("SELECT count(*) FROM contributions").await, 2);
    let held: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT p.event_id, p.error_message FROM processed_events p JOIN processed_events b ON b.id = p.held_behind
          WHERE p.sequence_state = 'held' AND b.event_id = $1 ORDER BY p.id",
    )
    .bind(&overflowing.event_id)
    .fetch_all(&world.pool)
    .await
    .unwrap();
    let later: Vec<&str> = batch[3..].iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(held.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), later);
    assert!(held[0].1.as_deref().unwrap().contains(&format!("held behind {}", overflowing.event_id)));

    // Resolving the failure lets the events behind it go on without it.
    let resolved = world.replay(&["dlq", "resolve", &overflowing.event_id, "--note", "amount was a typo"]).await;
    assert!(resolved.status.success(), "{}", String::from_utf8_lossy(&resolved.stderr));
    world.wait_for_count(PROCESSED, 6, Duration::from_secs(20)).await;
    worker.stop().await;
    assert_eq!(world.scalar("SELECT count(*) FROM contributions").await, 5);
    assert_eq!(
        world
            .scalar("SELECT count(*) FROM processed_events WHERE sequence_state IS NOT NULL AND status <> 'error'")
            .await,
        0
    );
    world.cleanup().await;
}
