//! The two-person rule (`replay console --require-approval`) on real
//! services: the maker of a plan can neither apply it nor approve it; a
//! viewer cannot approve; another operator approves (audited under its
//! token's name), and then the apply runs to processed. Without the rule,
//! approving still works and applying does not need it. In a real browser,
//! the plan page says who must approve, and the apply form appears once a
//! second operator's session approved.
#![allow(clippy::unwrap_used)] // a test that cannot read its own database should fail loudly

use std::time::Duration;

use crate::common::*;
use replay::store::tokens::Role;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// Five submissions of one period, published and processed once.
async fn processed_submissions(world: &World) -> Vec<replay::wire::envelope::Event> {
    let (period, member) = (Uuid::new_v4(), Uuid::new_v4());
    let mut events = vec![period_opened(period)];
    events.extend((0..5).map(|n| submitted(Uuid::new_v4(), member, period, 10 + n)));
    world.publish(&events).await;
    world.wait_for_count(PROCESSED, 6, WAIT).await;
    events
}

/// A plan of the submissions made over the API by `token`; its id.
async fn plan_submissions(console: &RunningConsole, token: &str) -> String {
    let body = json!({"type": ["contribution.submitted"], "reason": "INC-12: recompute, two people"});
    let made = call(console, Some(token), "POST", "/api/v1/plans", Some(body)).await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    made.body["plan_id"].as_str().unwrap().to_string()
}

/// Follows the plan's status until its replay is done with `rows` processed.
async fn wait_done(console: &RunningConsole, token: &str, plan_id: &str, rows: i64) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let status = call(console, Some(token), "GET", &format!("/api/v1/plans/{plan_id}/status"), None).await;
        assert_eq!(status.status, 200, "{:?}", status.body);
        if status.body["state"] == "done" && status.body["by_status"] == json!({"processed": rows}) {
            return status.body;
        }
        assert!(std::time::Instant::now() < deadline, "the replay never settled: {:?}", status.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Scrolls the plan page to its approval, so a screenshot shows it.
async fn show_approval(browser: &Browser) {
    let script = "document.getElementById('approval-state').scrollIntoView()";
    browser.client.execute(script, vec![]).await.unwrap();
}

async fn audited(world: &World, action: &str) -> Vec<(String, Value)> {
    sqlx::query_as("SELECT operator, details FROM replay_control.audit_log WHERE action = $1 ORDER BY id")
        .bind(action)
        .fetch_all(&world.pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn with_the_rule_a_plan_is_applied_only_after_another_operator_approved_it(pool: PgPool) {
    let world = World::new(pool).await;
    let worker = world.start_worker(world.worker_config("w1"));
    let events = processed_submissions(&world).await;
    let console = RunningConsole::start_with(&world, |settings| settings.require_approval = true).await;
    let maker = console.token(&world, "otto", Role::Operator).await;
    let other = console.token(&world, "olga", Role::Operator).await;
    let viewer = console.token(&world, "vera", Role::Viewer).await;
    let plan_id = plan_submissions(&console, &maker).await;
    let plan_path = format!("/api/v1/plans/{plan_id}");

    let shown = call(&console, Some(&viewer), "GET", &plan_path, None).await;
    assert_eq!(shown.status, 200, "{:?}", shown.body);
    assert_eq!((shown.body["approval"].clone(), shown.body["requires_approval"].clone()), (Value::Null, json!(true)));
    let digest = shown.body["digest"].as_str().unwrap().to_string();

    // The maker's apply: refused, and nothing happened (no audit entry, no
    // run, no backup, every row still processed once).
    let refused = call(&console, Some(&maker), "POST", &format!("{plan_path}/apply"), Some(json!({}))).await;
    assert_eq!(refused.status, 409, "{:?}", refused.body);
    let error = refused.body["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("plan {plan_id} needs the approval of an operator other than otto"))
            && error.contains("two-person rule"),
        "{error}"
    );
    assert!(audited(&world, "replay.apply").await.is_empty());
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.replay_runs").await, 0);
    assert!(!console.backups().exists() || std::fs::read_dir(console.backups()).unwrap().next().is_none());
    world.assert_applied(&events, 1).await;

    // The maker cannot approve; a viewer may not.
    let own = call(&console, Some(&maker), "POST", &format!("{plan_path}/approve"), None).await;
    assert_eq!(own.status, 409, "{:?}", own.body);
    assert!(own.body["error"]
        .as_str()
        .unwrap()
        .contains("the plan was made by otto: another operator must approve it"));
    let by_viewer = call(&console, Some(&viewer), "POST", &format!("{plan_path}/approve"), None).await;
    assert_eq!(by_viewer.status, 403, "{:?}", by_viewer.body);
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.plan_approvals").await, 0);
    assert!(audited(&world, "plan.approve").await.is_empty());

    // Another operator approves: the approval, audited under its token's name.
    let approved = call(&console, Some(&other), "POST", &format!("{plan_path}/approve"), None).await;
    assert_eq!(approved.status, 200, "{:?}", approved.body);
    assert_eq!(approved.body["approved_by"], "olga");
    assert_eq!(approved.body["plan_digest"], digest.as_str());
    let entries = audited(&world, "plan.approve").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, "olga");
    assert_eq!(entries[0].1, json!({"plan_id": plan_id, "digest": digest, "approver": "olga"}));
    // Once is enough: a second approval is refused and recorded nowhere.
    let again = call(&console, Some(&other), "POST", &format!("{plan_path}/approve"), None).await;
    assert_eq!(again.status, 409, "{:?}", again.body);
    assert!(again.body["error"].as_str().unwrap().contains("is approved already (by olga"), "{:?}", again.body);
    assert_eq!(audited(&world, "plan.approve").await.len(), 1);
    let shown = call(&console, Some(&viewer), "GET", &plan_path, None).await;
    assert_eq!(shown.body["approval"]["approved_by"], "olga");

    // Now the maker's apply runs, to every row processed.
    let applied = call(&console, Some(&maker), "POST", &format!("{plan_path}/apply"), Some(json!({}))).await;
    assert_eq!(applied.status, 202, "{:?}", applied.body);
    wait_done(&console, &maker, &plan_id, 5).await;
    world.assert_applied(&events[1..], 2).await;
    world.assert_applied(&events[..1], 1).await;
    let applies = audited(&world, "replay.apply").await;
    assert_eq!(applies.len(), 1);
    assert_eq!(applies[0].0, "otto");
    let audit = call(&console, Some(&viewer), "GET", "/api/v1/audit", None).await;
    assert_eq!(audit.body["chain"]["intact"], true, "{:?}", audit.body);

    console.stop().await;
    worker.stop().await;
    world.cleanup().await;
}

#[sqlx::test]
async fn without_the_rule_approving_still_works_and_applying_does_not_need_it(pool: PgPool) {
    let world = World::new(pool).await;
    let worker = world.start_worker(world.worker_config("w1"));
    let events = processed_submissions(&world).await;
    let console = RunningConsole::start(&world).await;
    let maker = console.token(&world, "otto", Role::Operator).await;
    let other = console.token(&world, "olga", Role::Operator).await;
    let plan_id = plan_submissions(&console, &maker).await;
    let plan_path = format!("/api/v1/plans/{plan_id}");

    let shown = call(&console, Some(&maker), "GET", &plan_path, None).await;
    assert_eq!((shown.body["approval"].clone(), shown.body["requires_approval"].clone()), (Value::Null, json!(false)));
    let applied = call(&console, Some(&maker), "POST", &format!("{plan_path}/apply"), Some(json!({}))).await;
    assert_eq!(applied.status, 202, "{:?}", applied.body);
    wait_done(&console, &maker, &plan_id, 5).await;
    world.assert_applied(&events[1..], 2).await;

    // The maker still cannot approve its own plan; another operator can.
    let own = call(&console, Some(&maker), "POST", &format!("{plan_path}/approve"), None).await;
    assert_eq!(own.status, 409, "{:?}", own.body);
    let approved = call(&console, Some(&other), "POST", &format!("{plan_path}/approve"), None).await;
    assert_eq!((approved.status, approved.body["approved_by"].clone()), (200, json!("olga")), "{:?}", approved.body);
    assert_eq!(audited(&world, "plan.approve").await.len(), 1);

    console.stop().await;
    worker.stop().await;
    world.cleanup().await;
}

#[sqlx::test]
async fn the_plan_page_asks_for_another_operator_and_offers_apply_once_approved(pool: PgPool) {
    let world = World::new(pool).await;
    let worker = world.start_worker(world.worker_config("w1"));
    processed_submissions(&world).await;
    let console = RunningConsole::start_with(&world, |settings| settings.require_approval = true).await;
    let maker = console.token(&world, "otto", Role::Operator).await;
    let other = console.token(&world, "olga", Role::Operator).await;
    let plan_id = plan_submissions(&console, &maker).await;
    let page = format!("/plans/{plan_id}");
    let browser = Browser::start().await;

    // The maker sees who must approve, no Approve form and no apply form.
    browser.sign_in(&console, &maker).await;
    browser.open(&console, &page).await;
    assert!(
        browser.text("#approval-state").await.contains("needs approval by an operator other than otto"),
        "{}",
        browser.text("#approval-state").await
    );
    assert_eq!(browser.count("form#approve").await, 0, "the maker is not offered approval");
    assert_eq!(browser.count("form#apply").await, 0, "no apply before the approval");
    assert!(browser.text("#apply-blocked").await.contains("two-person rule"));
    show_approval(&browser).await;
    browser.screenshot("plan-needs-approval").await;
    browser.follow("form[action='/logout'] button").await;

    // A second operator's session approves; the apply form appears.
    browser.sign_in(&console, &other).await;
    browser.open(&console, &page).await;
    assert_eq!(browser.count("form#apply").await, 0);
    browser.follow("#approve-button").await;
    assert_eq!(browser.path().await, page);
    assert!(browser.text("#approval-state").await.starts_with("approved by olga at "));
    assert_eq!(browser.count("form#approve").await, 0, "approved once");
    assert_eq!(browser.count("form#apply").await, 1, "the apply form, now that the plan is approved");
    show_approval(&browser).await;
    browser.screenshot("plan-approved").await;
    let approver: String = sqlx::query_scalar("SELECT approved_by FROM replay_control.plan_approvals")
        .fetch_one(&world.pool)
        .await
        .unwrap();
    assert_eq!(approver, "olga");
    assert_eq!(audited(&world, "plan.approve").await[0].0, "olga");

    browser.close().await;
    console.stop().await;
    worker.stop().await;
    world.cleanup().await;
}
