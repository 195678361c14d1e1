//! `replay apply --canary N` as an operator runs it: a canary over events
//! whose cause is not fixed halts after the canary (exit 4, the rest parked,
//! the halt audited) and the same apply resumes once the cause is fixed; a
//! canary that passes goes on to done; a bad policy is a usage error.
#![allow(clippy::unwrap_used)] // a test that cannot read its own database should fail loudly

use std::time::Duration;

use crate::common::*;
use replay::wire::envelope::Event;
use serde_json::Value;
use uuid::Uuid;

const ERRORS: &str = "SELECT count(*) FROM processed_events WHERE status = 'error'";

/// A period and `n` approvals published before their submissions, which a
/// running worker fails for good; returns the period, the contributions and
/// the events published.
pub(crate) async fn approvals_before_submissions(world: &World, n: usize) -> (Uuid, Vec<Uuid>, Vec<Event>) {
    let period = Uuid::new_v4();
    let contributions: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
    let mut events = vec![period_opened(period)];
    events.extend(contributions.iter().map(|c| approved(*c)));
    world.publish(&events).await;
    world.wait_for_count(ERRORS, n as i64, Duration::from_secs(30)).await;
    (period, contributions, events)
}

/// The fix: the missing submissions, published and processed.
async fn publish_submissions(world: &World, period: Uuid, contributions: &[Uuid]) -> Vec<Event> {
    let member = Uuid::new_v4();
    let submissions: Vec<Event> = contributions.iter().map(|c| submitted(*c, member, period, 10)).collect();
    let before = world.scalar(PROCESSED).await;
    world.publish(&submissions).await;
    world.wait_for_count(PROCESSED, before + submissions.len() as i64, Duration::from_secs(30)).await;
    submissions
}

async fn plan_of_errors(world: &World, desk: &Desk) -> (Value, Uuid) {
    let plan = desk.plan(world, &["--status", "error", "--reason", "INC-9: approvals before submissions"]).await;
    let plan_id = plan["plan_id"].as_str().unwrap().parse().unwrap();
    (plan, plan_id)
}

async fn halts(world: &World, plan_id: Uuid) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT details FROM replay_control.audit_log WHERE action = 'replay.halt' AND details->>'plan_id' = $1",
    )
    .bind(plan_id.to_string())
    .fetch_all(&world.pool)
    .await
    .unwrap()
}

#[sqlx::test]
async fn a_canary_over_events_whose_cause_is_not_fixed_halts_and_resumes_once_fixed(pool: sqlx::PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    let worker = world.start_worker(world.worker_config("w1"));
    let (period, contributions, approvals) = approvals_before_submissions(&world, 5).await;
    let (plan, plan_id) = plan_of_errors(&world, &desk).await;
    let path = plan["plan_path"].as_str().unwrap();

    // The cause is not fixed: both canary approvals fail again.
    let out = desk.apply(&world, path, &["--yes", "--canary", "2"]).await;
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("halted after the canary: 2 of 2 canary events failed (100% > 0%): contribution.approved:"),
        "{stderr}"
    );
    assert!(stderr.contains("run the same `replay apply` again; the other 3 events were not published"), "{stderr}");
    let published =
        world.scalar(&format!("SELECT published FROM replay_control.replay_runs WHERE plan_id = '{plan_id}'")).await;
    assert_eq!(published, 2, "only the canary was published");
    // The rest stays parked for the plan, and no claimer takes it meanwhile.
    let parked = format!(
        "SELECT count(*) FROM processed_events WHERE status = 'pending' AND replay_plan = '{plan_id}'
            AND next_attempt_at > now() + interval '1 year'"
    );
    assert_eq!(world.scalar(&parked).await, 3);
    let halted = halts(&world, plan_id).await;
    assert_eq!(halted.len(), 1, "{halted:?}");
    assert_eq!((halted[0]["failed"].clone(), halted[0]["canary"].clone()), (2.into(), 2.into()));
    assert!(halted[0]["reason"].as_str().unwrap().starts_with("after the canary: 2 of 2"), "{}", halted[0]);
    world.wait_for_count(ERRORS, 2, Duration::from_secs(20)).await;
    // What the on-call reads of it: halted, and why.
    let out = world.replay(&["status", path, "--json"]).await;
    let status: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(status["state"], "halted", "{status}");
    assert!(status["halted"]["reason"].as_str().unwrap().starts_with("after the canary: 2 of 2"), "{status}");

    // Fixed: the submissions arrive; the same apply retries the canary's
    // failures first, then publishes the rest.
    publish_submissions(&world, period, &contributions).await;
    let out = desk.apply(&world, path, &["--yes", "--canary", "2", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let outcome: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!((outcome["resumed"].clone(), outcome["published_now"].clone()), (true.into(), 3.into()));
    world.wait_for_count(PROCESSED, 1 + 5 + 5, Duration::from_secs(30)).await;
    worker.stop().await;
    for contribution in &contributions {
        assert_eq!(world.contribution_status(*contribution).await, "approved");
    }
    world.assert_applied(&approvals[1..], 1).await;
    world.assert_each_applied_once().await;
    assert_eq!(halts(&world, plan_id).await.len(), 1, "the resumed apply did not halt");
    let out = world.replay(&["status", path, "--json"]).await;
    let status: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!((status["state"].clone(), status["halted"].clone()), ("done".into(), Value::Null), "{status}");
    world.cleanup().await;
}

#[sqlx::test]
async fn a_canary_that_passes_goes_on_to_done(pool: sqlx::PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    let worker = world.start_worker(world.worker_config("w1"));
    let (period, contributions, approvals) = approvals_before_submissions(&world, 6).await;
    publish_submissions(&world, period, &contributions).await;
    let (plan, plan_id) = plan_of_errors(&world, &desk).await;
    let path = plan["plan_path"].as_str().unwrap();

    let out = desk.apply(&world, path, &["--yes", "--canary", "2", "--max-failure-rate", "0.1", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let outcome: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(outcome["published_now"], 6);
    world.wait_for_count(PROCESSED, 1 + 6 + 6, Duration::from_secs(30)).await;
    worker.stop().await;
    world.assert_applied(&approvals[1..], 1).await;
    world.assert_each_applied_once().await;
    assert!(halts(&world, plan_id).await.is_empty());
    let state = world
        .scalar(&format!(
            "SELECT count(*) FROM replay_control.replay_runs WHERE plan_id = '{plan_id}' AND state = 'done'"
        ))
        .await;
    assert_eq!(state, 1);
    world.cleanup().await;
}

#[sqlx::test]
async fn a_bad_canary_policy_is_a_usage_error_and_changes_nothing(pool: sqlx::PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    // The policy is read before the plan is: no plan is needed to refuse it.
    let path = &format!("{}/any.jsonl", desk.plans());
    for (args, named) in [
        (vec!["--canary", "2", "--max-failure-rate", "2"], "--max-failure-rate"),
        (vec!["--canary", "0"], "--canary"),
        (vec!["--max-failure-rate", "0.5"], "--canary"),
    ] {
        let mut full = vec!["--yes"];
        full.extend(args.iter().copied());
        let out = desk.apply(&world, path, &full).await;
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
    assert!(stderr_of(&desk.apply(&world, path, &["--yes", "--canary", "1", "--max-failure-rate", "2"]).await)
        .contains("a fraction from 0 to 1"));
    assert_eq!(
        world
            .scalar("SELECT count(*) FROM replay_control.audit_log WHERE action IN ('replay.apply', 'replay.halt')")
            .await,
        0
    );
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.replay_runs").await, 0);
    assert!(desk.backup_files().is_empty());
    world.cleanup().await;
}

#[sqlx::test]
async fn failures_after_a_passing_canary_halt_the_rest(pool: sqlx::PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    let worker = world.start_worker(world.worker_config("w1"));
    let (period, contributions, _) = approvals_before_submissions(&world, 12).await;
    // Only the first two (the canary, in plan order) are fixed.
    publish_submissions(&world, period, &contributions[..2]).await;
    let (plan, plan_id) = plan_of_errors(&world, &desk).await;
    let path = plan["plan_path"].as_str().unwrap();

    // Paced at one event a batch, so the guard counts between batches.
    let out = desk.apply(&world, path, &["--yes", "--canary", "2", "--rate", "4"]).await;
    let stderr = stderr_of(&out);
    worker.stop().await;
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("halted during the apply: "), "{stderr}");
    assert!(stderr.contains("events settled so far failed"), "{stderr}");
    let published =
        world.scalar(&format!("SELECT published FROM replay_control.replay_runs WHERE plan_id = '{plan_id}'")).await;
    assert!((3..12).contains(&published), "the canary passed and the rest stopped part-way: {published}");
    let parked =
        format!("SELECT count(*) FROM processed_events WHERE status = 'pending' AND replay_plan = '{plan_id}'");
    assert_eq!(world.scalar(&parked).await, 12 - published);
    for contribution in &contributions[..2] {
        assert_eq!(world.contribution_status(*contribution).await, "approved");
    }
    let halted = halts(&world, plan_id).await;
    assert_eq!(halted.len(), 1, "{halted:?}");
    assert!(halted[0]["reason"].as_str().unwrap().starts_with("during the apply: "), "{}", halted[0]);
    world.cleanup().await;
}
