//! A destination replay (`replay plan --destination queue:NAME`): the plan's
//! events go to one subscriber's queue and nowhere else, and our database
//! stays as it was (no backup, no reset, only the audit entry and the run).
#![allow(clippy::unwrap_used)] // a test that cannot read its own broker should fail loudly

use std::time::Duration;

use crate::common::*;
use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use replay::wire::envelope::{self, ReplayHeader};
use replay::wire::transport;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// A subscriber's queue with a unique name, declared as its deployment would.
struct Subscriber {
    queue: String,
}

impl Subscriber {
    async fn declare(world: &World) -> Self {
        let queue = format!("test-subscriber-{}", Uuid::new_v4().simple());
        let connection = transport::connect(&world.endpoints.amqp_url, "test subscriber").await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        channel.queue_declare(queue.as_str().into(), durable, FieldTable::default()).await.unwrap();
        let _ = connection.close(200, "declared".into()).await;
        Self { queue }
    }

    /// Takes every message off the queue: (message id, x-replay-plan header), by id.
    async fn take_all(&self, world: &World) -> Vec<(String, ReplayHeader)> {
        let mut taken = self.take_in_order(world).await;
        taken.sort_by(|a, b| a.0.cmp(&b.0));
        taken
    }

    /// Publishes a message of the subscriber's own traffic (or, with
    /// `plan`, one another replay sent it), with id `id`.
    async fn send(&self, world: &World, id: &str, plan: Option<&str>) {
        let connection = transport::connect(&world.endpoints.amqp_url, "test producer").await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        let mut properties = lapin::BasicProperties::default().with_message_id(id.into());
        if let Some(plan) = plan {
            let mut headers = FieldTable::default();
            headers.insert(
                envelope::REPLAY_PLAN_HEADER.into(),
                lapin::types::AMQPValue::LongString(plan.to_string().into()),
            );
            properties = properties.with_headers(headers);
        }
        channel
            .basic_publish("".into(), self.queue.as_str().into(), Default::default(), b"{}", properties)
            .await
            .unwrap()
            .await
            .unwrap();
        let _ = connection.close(200, "sent".into()).await;
    }

    /// Takes every message off the queue, in queue order.
    async fn take_in_order(&self, world: &World) -> Vec<(String, ReplayHeader)> {
        let connection = transport::connect(&world.endpoints.amqp_url, "test subscriber").await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        let mut taken = Vec::new();
        while let Some(message) =
            channel.basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap()
        {
            let id = message.delivery.properties.message_id().as_ref().unwrap().to_string();
            taken.push((id, envelope::replay_plan(&message.delivery.properties)));
        }
        let _ = connection.close(200, "taken".into()).await;
        taken
    }

    async fn delete(self, world: &World) {
        let connection = transport::connect(&world.endpoints.amqp_url, "test cleanup").await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        let _ = channel.queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default()).await;
        let _ = connection.close(200, "deleted".into()).await;
    }
}

/// A world whose ledger holds `n` processed events, its worker stopped.
async fn processed(world: &World, n: usize) -> Vec<replay::wire::envelope::Event> {
    let period = Uuid::new_v4();
    let mut events = vec![period_opened(period)];
    for _ in 1..n {
        events.push(submitted(Uuid::new_v4(), Uuid::new_v4(), period, 10));
    }
    world.publish(&events).await;
    let worker = world.start_worker(world.worker_config("w1"));
    world.wait_for_count(PROCESSED, n as i64, Duration::from_secs(30)).await;
    worker.stop().await;
    events
}

async fn audit_entries(world: &World) -> i64 {
    world.scalar("SELECT count(*) FROM replay_control.audit_log").await
}

#[sqlx::test]
async fn a_destination_replay_fills_only_the_named_queue_and_leaves_the_ledger_as_it_was(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    let events = processed(&world, 5).await;
    let subscriber = Subscriber::declare(&world).await;
    let destination = format!("queue:{}", subscriber.queue);

    let plan = desk
        .plan(
            &world,
            &["--type", "contribution.submitted", "--reason", "new subscriber", "--destination", &destination],
        )
        .await;
    assert_eq!(plan["rows"], 4);
    assert_eq!(plan["destination"], destination.as_str());
    let (ledger, domain) = (world.ledger_digest().await, world.domain_digest().await);

    let out = desk.apply(&world, plan["plan_path"].as_str().unwrap(), &["--yes"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let said = stdout_of(&out);
    assert!(said.contains("no backup") && said.contains("changes nothing in this database"), "{said}");

    // The subscriber got exactly the plan's events, each labelled with the plan.
    let plan_id: replay::replay::plan::PlanId = plan["plan_id"].as_str().unwrap().parse().unwrap();
    let mut wanted: Vec<String> = events[1..].iter().map(|e| e.event_id.clone()).collect();
    wanted.sort();
    let taken = subscriber.take_all(&world).await;
    assert_eq!(taken.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), wanted);
    assert!(taken.iter().all(|(_, header)| *header == ReplayHeader::Plan(plan_id)), "{taken:?}");

    // Nothing else moved: the ledger, the domain, our workers' queue, no backup.
    assert_eq!(world.ledger_digest().await, ledger);
    assert_eq!(world.domain_digest().await, domain);
    assert_eq!(world.queue_depth().await, 0);
    assert!(desk.backup_files().is_empty(), "{:?}", desk.backup_files());
    let details: Value = sqlx::query_scalar(
        "SELECT details FROM replay_control.audit_log WHERE action = 'replay.apply' AND details->>'plan_id' = $1",
    )
    .bind(plan["plan_id"].as_str().unwrap())
    .fetch_one(&world.pool)
    .await
    .unwrap();
    assert_eq!(details["destination"], destination.as_str());
    assert_eq!(details["backup_path"], Value::Null);
    let state: String = sqlx::query_scalar("SELECT state::text FROM replay_control.replay_runs WHERE plan_id = $1")
        .bind(plan_id)
        .fetch_one(&world.pool)
        .await
        .unwrap();
    assert_eq!(state, "done");

    // Applying it again publishes nothing more.
    let again = desk.apply(&world, plan["plan_path"].as_str().unwrap(), &["--yes"]).await;
    assert_eq!(again.status.code(), Some(0), "{}", stderr_of(&again));
    assert!(subscriber.take_all(&world).await.is_empty());

    subscriber.delete(&world).await;
    world.cleanup().await;
}

#[sqlx::test]
async fn a_paused_destination_replay_stops_between_batches_and_resumes_where_it_stopped(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    let events = processed(&world, 30).await;
    let subscriber = Subscriber::declare(&world).await;
    let destination = format!("queue:{}", subscriber.queue);
    let plan = desk.plan(&world, &["--all", "--reason", "new subscriber", "--destination", &destination]).await;
    let path = plan["plan_path"].as_str().unwrap();
    let ledger = world.ledger_digest().await;

    let apply = desk.spawn_apply(&world, path, "10", &[]);
    world
        .wait_for_count(
            "SELECT count(*) FROM replay_control.replay_runs WHERE published >= 2",
            1,
            Duration::from_secs(30),
        )
        .await;
    sqlx::query("INSERT INTO replay_control.pause (operator, reason) VALUES ('carol', 'INC-15')")
        .execute(&world.pool)
        .await
        .unwrap();
    let out = apply.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr_of(&out));
    let published = world.scalar("SELECT published FROM replay_control.replay_runs").await;
    assert!(published < 30, "{published}");
    let mut taken = subscriber.take_all(&world).await;
    assert_eq!(taken.len() as i64, published);

    sqlx::query("DELETE FROM replay_control.pause").execute(&world.pool).await.unwrap();
    let out = desk.apply(&world, path, &["--yes"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("(resumed)"), "{}", stdout_of(&out));
    taken.extend(subscriber.take_all(&world).await);
    let mut ids: Vec<String> = taken.into_iter().map(|(id, _)| id).collect();
    ids.sort();
    let mut wanted: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
    wanted.sort();
    assert_eq!(ids, wanted, "every event once, none twice");
    assert_eq!(world.ledger_digest().await, ledger);
    assert_eq!(world.queue_depth().await, 0);
    assert_eq!(audit_entries_of(&world, "replay.apply").await, 1, "a resumed apply writes no second entry");

    subscriber.delete(&world).await;
    world.cleanup().await;
}

async fn audit_entries_of(world: &World, action: &str) -> i64 {
    world.scalar(&format!("SELECT count(*) FROM replay_control.audit_log WHERE action = '{action}'")).await
}

#[sqlx::test]
async fn an_emergency_stop_of_a_destination_plan_restores_nothing_and_removes_its_messages_from_that_queue_only(
    pool: PgPool,
) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    processed(&world, 3).await;
    let subscriber = Subscriber::declare(&world).await;
    let destination = format!("queue:{}", subscriber.queue);
    let plan = desk.plan(&world, &["--all", "--reason", "new subscriber", "--destination", &destination]).await;
    let path = plan["plan_path"].as_str().unwrap();
    let plan_id = plan["plan_id"].as_str().unwrap();
    // The subscriber's own traffic, before and after the replay, and a
    // message another replay sent it.
    subscriber.send(&world, "theirs-1", None).await;
    let out = desk.apply(&world, path, &["--yes"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    subscriber.send(&world, "theirs-2", None).await;
    let other_plan = Uuid::new_v4().to_string();
    subscriber.send(&world, "theirs-3", Some(&other_plan)).await;
    let ledger = world.ledger_digest().await;

    let reports = desk.dir.path().join("reports").display().to_string();
    let out = world
        .replay(&[
            "emergency-stop",
            "--plan",
            path,
            "--reason",
            "wrong subscriber",
            "--yes",
            "--json",
            "--report-dir",
            &reports,
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout_of(&out), stderr_of(&out));
    let report: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    let steps = report["steps"].as_array().unwrap();
    let said = steps.iter().find(|s| s["name"] == "destination").unwrap();
    let detail = said["detail"].as_str().unwrap();
    assert_eq!(said["ok"], true, "{said}");
    assert!(
        detail.contains(&format!(
            "removed 3 message(s) of plan {plan_id} from {destination}; 3 other message(s) given back in their order"
        )),
        "{detail}"
    );
    assert!(steps.iter().all(|s| s["name"] != "restore"), "nothing is restored: {steps:?}");
    assert_eq!(report["restored_from"], Value::Null);
    assert_eq!(report["purged_replay_messages"], 3);
    // Only the plan's messages are gone; the rest is there, in its order.
    let left = subscriber.take_in_order(&world).await;
    let ids: Vec<&str> = left.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["theirs-1", "theirs-2", "theirs-3"], "{left:?}");
    assert_eq!(left[2].1, ReplayHeader::Plan(other_plan.parse().unwrap()));
    assert_eq!(world.ledger_digest().await, ledger, "our ledger is as it was");

    subscriber.delete(&world).await;
    world.cleanup().await;
}

#[sqlx::test]
async fn a_destination_queue_that_does_not_exist_is_refused_and_nothing_changes(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    processed(&world, 2).await;
    let missing = format!("test-missing-{}", Uuid::new_v4().simple());
    let destination = format!("queue:{missing}");
    let plan = desk.plan(&world, &["--all", "--reason", "new subscriber", "--destination", &destination]).await;
    let (ledger, domain, entries) =
        (world.ledger_digest().await, world.domain_digest().await, audit_entries(&world).await);

    let out = desk.apply(&world, plan["plan_path"].as_str().unwrap(), &["--yes"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let said = stderr_of(&out);
    assert!(
        said.contains(&format!("queue {missing} does not exist on the broker")) && said.contains("fix --destination"),
        "{said}"
    );
    assert_eq!(world.ledger_digest().await, ledger);
    assert_eq!(world.domain_digest().await, domain);
    assert_eq!(audit_entries(&world).await, entries);
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.replay_runs").await, 0);
    assert!(desk.backup_files().is_empty());
    assert_eq!(world.queue_depth().await, 0);
    world.cleanup().await;
}

#[sqlx::test]
async fn a_destination_that_is_not_queue_colon_name_is_a_usage_error(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    let plans = desk.plans();
    for bad in ["nonsense", "queue:", "exchange:x"] {
        let out = world.replay(&["plan", "--out-dir", &plans, "--all", "--reason", "r", "--destination", bad]).await;
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr_of(&out));
        assert!(stderr_of(&out).contains("--destination takes queue:NAME"), "{}", stderr_of(&out));
    }
    // A workflow resets rows here: it cannot go to one subscriber.
    let out = world
        .replay(&[
            "plan",
            "--out-dir",
            &plans,
            "--workflow",
            "period-close",
            "--period",
            "latest-closed",
            "--reason",
            "r",
            "--destination",
            "queue:x",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("plan them apart"), "{}", stderr_of(&out));
    world.cleanup().await;
}
