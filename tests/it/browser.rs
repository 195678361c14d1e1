//! The console's pages in a real headless Chromium (WebDriver): signing in
//! (and a wrong token refused), filtering events and opening one, a
//! `<script>` in a payload shown as text, dead letters grouped and one
//! resolved with a note, a plan made from a DLQ group and applied with its
//! typed confirmation until its page says done, a plan's rehearsal shown on
//! its page and a canary asked for in its form halting the apply, and pause
//! and resume with a reason. Each asserts on what the page shows and on the database; the
//! main pages are saved to `target/console-screenshots/`.
#![allow(clippy::unwrap_used)] // a test that cannot read its own database should fail loudly

use std::time::Duration;

use crate::common::*;
use replay::store::tokens::Role;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

const SETTLED: &str = "SELECT count(*) FROM processed_events WHERE status NOT IN ('pending', 'processing')";
const WAIT: Duration = Duration::from_secs(30);

/// Three hours of history for the charts: rows settled over the last 170
/// minutes, one in seven failed.
async fn history(world: &World) {
    sqlx::query(
        "INSERT INTO processed_events (event_id, event_type, payload, occurred_at, status, processed_at, error_message, received_at)
         SELECT 'hist-' || g, 'contribution.submitted', '{}', now() - (g % 170) * interval '1 minute',
                CASE WHEN g % 7 = 0 THEN 'error' ELSE 'processed' END,
                now() - (g % 170) * interval '1 minute' - (g % 3) * interval '1 minute',
                CASE WHEN g % 7 = 0 THEN 'deadlock detected' END,
                now() - (g % 170) * interval '1 minute'
           FROM generate_series(1, 900) AS g",
    )
    .execute(&world.pool)
    .await
    .unwrap();
}

#[sqlx::test]
async fn signing_in_takes_a_token_in_force_and_refuses_a_wrong_one(pool: PgPool) {
    let world = World::new(pool).await;
    history(&world).await;
    let worker = world.start_worker(world.worker_config("w1"));
    let console = RunningConsole::start(&world).await;
    let token = console.token(&world, "vera", Role::Viewer).await;
    let browser = Browser::start().await;

    browser.open(&console, "/").await;
    assert_eq!(browser.path().await, "/login", "no session: the login page");
    browser.sign_in(&console, "rpl_not-a-token").await;
    assert!(browser.text("#login-error").await.contains("this token is not in force"));
    assert_eq!(browser.path().await, "/login");

    browser.sign_in(&console, &token).await;
    assert_eq!(browser.path().await, "/");
    assert_eq!(browser.text("#signed-in").await, "vera (viewer)");
    browser.wait_for_text("#workers", "w1", WAIT).await;
    assert!(browser.count("#chart-processed rect").await >= 170, "a bar for each minute with rows");
    assert!(browser.count("#chart-failed rect").await > 0);
    browser.screenshot("overview").await;
    // A viewer reads the pause page but is offered no form on it.
    browser.open(&console, "/pause").await;
    assert_eq!(browser.count("form#pause").await + browser.count("form#resume").await, 0);
    assert!(!browser.client.source().await.unwrap().contains(&token), "the token is never shown");

    browser.close().await;
    console.stop().await;
    worker.stop().await;
    world.cleanup().await;
}

#[sqlx::test]
async fn events_are_filtered_and_opened_and_a_script_in_a_payload_is_only_text(pool: PgPool) {
    let world = World::new(pool).await;
    let worker = world.start_worker(world.worker_config("w1"));
    let (period, member) = (Uuid::new_v4(), Uuid::new_v4());
    let hostile = "<script>alert(1)</script>";
    let noted = event("member.noted", json!({"member_id": member, "note": hostile}));
    let mut events = vec![period_opened(period)];
    events.extend((0..3).map(|n| submitted(Uuid::new_v4(), member, period, 10 + n)));
    events.push(noted.clone());
    world.publish(&events).await;
    world.wait_for_count(SETTLED, 5, WAIT).await;
    let console = RunningConsole::start(&world).await;
    let token = console.token(&world, "vera", Role::Viewer).await;
    let browser = Browser::start().await;
    browser.sign_in(&console, &token).await;

    browser.open(&console, "/events").await;
    assert_eq!(browser.count("#events a").await, 5);
    browser.fill("#filters input[name=type]", "contribution.submitted").await;
    browser.follow("#filters button[type=submit]").await;
    assert_eq!(browser.count("#events a").await, 3, "only the submitted events");
    assert!(!browser.text("#events").await.contains("period.opened"));
    browser.screenshot("events").await;

    browser.follow("#events a").await;
    assert!(browser.path().await.starts_with("/events/"));
    assert!(browser.text("#fields").await.contains("contribution.submitted"));
    assert!(browser.text("#payload").await.contains(&member.to_string()));

    // The hostile value as a filter selects its event and harms nothing.
    browser.open(&console, "/events").await;
    browser.fill("#filters input[name=payload]", &format!("note={hostile}")).await;
    browser.follow("#filters button[type=submit]").await;
    assert_eq!(browser.count("#events a").await, 1);
    browser.follow("#events a").await;
    assert_eq!(browser.path().await, format!("/events/{}", noted.event_id));
    assert!(browser.text("#payload").await.contains(hostile), "the payload shows the script as text");
    assert_eq!(browser.count("script").await, 0, "no script element came from the payload");
    assert!(browser.client.get_alert_text().await.is_err(), "no alert is open");
    browser.screenshot("event").await;

    browser.close().await;
    console.stop().await;
    worker.stop().await;
    world.cleanup().await;
}

#[sqlx::test]
async fn dead_letters_are_grouped_and_one_is_resolved_with_a_note(pool: PgPool) {
    let world = World::new(pool).await;
    sqlx::query(
        "INSERT INTO processed_events (event_id, event_type, payload, occurred_at, status, processed_at, error_message, received_at) VALUES
         ('appr-1', 'contribution.approved', '{\"contribution_id\": \"c-1\"}', now(), 'error', now(), 'contribution c-1 not found', now()),
         ('appr-2', 'contribution.approved', '{\"contribution_id\": \"c-2\"}', now(), 'error', now(), 'contribution c-2 not found', now()),
         ('appr-3', 'contribution.approved', '{\"contribution_id\": \"c-3\"}', now(), 'error', now(), 'contribution c-3 not found', now()),
         ('pay-1', 'payment.initiated', '{\"payment_id\": \"p-1\"}', now(), 'error', now(), 'provider down', now())",
    )
    .execute(&world.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO dead_letters (exchange, routing_key, body, reason) VALUES ('x', 'member.noted', 'not json', 'message body is not JSON')",
    )
    .execute(&world.pool)
    .await
    .unwrap();
    // A close held behind the first failed approval of its period.
    sqlx::query(
        "INSERT INTO processed_events (event_id, event_type, payload, occurred_at, status, sequence_key, sequence_state, held_behind)
         SELECT 'close-1', 'period.closed', '{}', now(), 'pending', 'period-1', 'held', id FROM processed_events WHERE event_id = 'appr-1'",
    )
    .execute(&world.pool)
    .await
    .unwrap();
    let console = RunningConsole::start(&world).await;
    let token = console.token(&world, "otto", Role::Operator).await;
    let browser = Browser::start().await;
    browser.sign_in(&console, &token).await;

    browser.open(&console, "/dlq").await;
    assert_eq!(browser.count("#failed-groups tr.group").await, 2, "grouped by type and error");
    let groups = browser.text("#failed-groups").await;
    // Errors that differ only in the row they name are one group.
    assert!(groups.contains("contribution.approved contribution c-<n> not found 3"), "{groups}");
    assert!(groups.contains("payment.initiated provider down 1"), "{groups}");
    assert_eq!(browser.count("#letter-groups tr.group").await, 1);
    assert_eq!(browser.count("#failed-events tr[data-entry]").await, 4);
    let held = browser.text("#held-events").await;
    assert!(held.contains("close-1 period.closed period-1 appr-1"), "{held}");
    browser.screenshot("dlq").await;

    browser.fill("#failed-events tr[data-entry='pay-1'] input[name=note]", "refunded by hand (INC-12)").await;
    browser.follow("#failed-events tr[data-entry='pay-1'] button").await;
    assert_eq!(browser.path().await, "/dlq");
    assert_eq!(browser.count("#failed-events tr[data-entry='pay-1']").await, 0, "the resolved row is gone");
    assert_eq!(browser.count("#failed-events tr[data-entry]").await, 3);
    let note: Option<String> =
        sqlx::query_scalar("SELECT resolved_note FROM processed_events WHERE event_id = 'pay-1'")
            .fetch_one(&world.pool)
            .await
            .unwrap();
    assert_eq!(note.as_deref(), Some("refunded by hand (INC-12)"));
    let audited: (String, String) = sqlx::query_as(
        "SELECT operator, details->>'note' FROM replay_control.audit_log WHERE action = 'dlq.resolve' AND details->>'id' = 'pay-1'",
    )
    .fetch_one(&world.pool)
    .await
    .unwrap();
    assert_eq!(audited, ("otto".to_string(), "refunded by hand (INC-12)".to_string()));

    browser.close().await;
    console.stop().await;
    world.cleanup().await;
}

#[sqlx::test]
async fn a_plan_made_from_a_dlq_group_is_applied_with_its_typed_confirmation_until_done(pool: PgPool) {
    let world = World::new(pool).await;
    let worker = world.start_worker(world.worker_config("w1"));
    let (period, member) = (Uuid::new_v4(), Uuid::new_v4());
    let mut events = vec![period_opened(period)];
    events.extend((0..4).map(|n| submitted(Uuid::new_v4(), member, period, 10 + n)));
    world.publish(&events).await;
    world.wait_for_count(PROCESSED, 5, WAIT).await;
    // The submissions failed on a database timeout that is gone now.
    sqlx::query(
        "UPDATE processed_events SET status = 'error', error_message = 'statement timeout' WHERE event_type = 'contribution.submitted'",
    )
    .execute(&world.pool)
    .await
    .unwrap();
    let console = RunningConsole::start(&world).await;
    let token = console.token(&world, "otto", Role::Operator).await;
    let browser = Browser::start().await;
    browser.sign_in(&console, &token).await;

    browser.open(&console, "/dlq").await;
    browser.fill("#failed-groups input[name=reason]", "INC-31: the timeout is fixed").await;
    browser.follow("#failed-groups button").await;
    let plan_path = browser.path().await;
    assert!(plan_path.starts_with("/plans/"), "the group's plan page: {plan_path}");
    let human = browser.text("#plan-human").await;
    assert!(human.contains("4 rows to replay") && human.contains("INC-31"), "the blast radius first: {human}");
    assert_eq!(browser.text("#progress-state").await, "not applied");
    let plan_id = browser.text("#plan-id").await;

    // A wrong confirmation: 400, nothing applied.
    browser.fill("#confirm", "deadbeef").await;
    browser.follow("#apply-button").await;
    assert!(browser.text("p.error").await.contains("the confirmation does not match"));
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.audit_log WHERE action = 'replay.apply'").await, 0);
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events WHERE status = 'error'").await, 4);

    browser.client.goto(&console.at(&plan_path)).await.unwrap();
    browser.fill("#confirm", &plan_id[..8]).await;
    // Paced at 2 events a second, the page opens before the replay is done
    // and its live view (the event stream, no reload) follows it to the end.
    browser.fill("#apply input[name=rate]", "2").await;
    browser.follow("#apply-button").await;
    assert_eq!(browser.path().await, plan_path);
    let first = browser.text("#progress-state").await;
    assert_ne!(first, "done", "the page opened while the replay ran");
    browser.wait_for_text("#progress-state", "done", Duration::from_secs(60)).await;
    assert_eq!(browser.text("#progress-settled").await, "settled", "the stream's last event arrived");
    browser.wait_for_text("#progress-processed", "4", WAIT).await;
    assert_eq!(browser.text("#progress-total").await, "4");
    browser.screenshot("plan").await;
    world.wait_for_count("SELECT count(*) FROM processed_events WHERE event_type = 'contribution.submitted' AND status = 'processed'", 4, WAIT).await;
    // Read again, the page says how the console's apply ended.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        browser.client.goto(&console.at(&plan_path)).await.unwrap();
        if browser.text("#progress-ending").await == "finished" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", browser.text("#progress-ending").await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let operator: String = sqlx::query_scalar(
        "SELECT operator FROM replay_control.audit_log WHERE action = 'replay.apply' AND details->>'plan_id' = $1",
    )
    .bind(&plan_id)
    .fetch_one(&world.pool)
    .await
    .unwrap();
    assert_eq!(operator, "otto");

    browser.close().await;
    console.stop().await;
    worker.stop().await;
    world.cleanup().await;
}

#[sqlx::test]
async fn pause_and_resume_with_a_reason_show_and_lift_the_banner(pool: PgPool) {
    let world = World::new(pool).await;
    let worker = world.start_worker(world.worker_config("w1"));
    let console = RunningConsole::start(&world).await;
    let token = console.token(&world, "otto", Role::Operator).await;
    let browser = Browser::start().await;
    browser.sign_in(&console, &token).await;
    assert_eq!(browser.count("#pause-banner").await, 0);

    browser.open(&console, "/pause").await;
    browser.fill("#pause input[name=reason]", "INC-7: database maintenance").await;
    browser.follow("#pause button").await;
    assert!(browser.text("#pause-banner").await.contains("INC-7: database maintenance"));
    let paused: (String, String) =
        sqlx::query_as("SELECT operator, reason FROM replay_control.pause").fetch_one(&world.pool).await.unwrap();
    assert_eq!(paused, ("otto".to_string(), "INC-7: database maintenance".to_string()));
    browser.open(&console, "/events").await;
    assert!(browser.text("#pause-banner").await.contains("by otto"), "the banner is on every page");

    browser.open(&console, "/pause").await;
    browser.fill("#resume input[name=reason]", "maintenance over").await;
    browser.follow("#resume button").await;
    assert_eq!(browser.count("#pause-banner").await, 0);
    assert!(browser.text("#pause-state").await.contains("running"));
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.pause").await, 0);

    browser.open(&console, "/audit").await;
    assert!(browser.text("#chain").await.contains("The chain verifies"));
    let audit = browser.text("#audit").await;
    assert!(audit.contains("workers.pause") && audit.contains("workers.resume") && audit.contains("otto"), "{audit}");
    browser.screenshot("audit").await;

    browser.close().await;
    console.stop().await;
    worker.stop().await;
    world.cleanup().await;
}

#[sqlx::test]
async fn the_plan_page_shows_its_rehearsal_and_its_canary_halts_an_apply_whose_cause_is_not_fixed(pool: PgPool) {
    let world = World::new(pool).await;
    let worker = world.start_worker(world.worker_config("w1"));
    crate::canary::approvals_before_submissions(&world, 4).await;
    let console = RunningConsole::start(&world).await;
    let token = console.token(&world, "otto", Role::Operator).await;
    let browser = Browser::start().await;
    browser.sign_in(&console, &token).await;
    browser.open(&console, "/dlq").await;
    browser.fill("#failed-groups input[name=reason]", "INC-40: approvals before submissions").await;
    browser.follow("#failed-groups button").await;
    let plan_path = browser.path().await;
    let plan_id = browser.text("#plan-id").await;
    let file = console.plan_file(&plan_id);
    assert!(
        browser.text("#rehearsal").await.contains("not rehearsed: `replay rehearse"),
        "{}",
        browser.text("#rehearsal").await
    );

    // Rehearsed: the page says what the rehearsal found, on today's data.
    let out = world.replay(&["rehearse", file.to_str().unwrap(), "--operator", "carol"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    browser.client.goto(&console.at(&plan_path)).await.unwrap();
    let rehearsal = browser.text("#rehearsal").await;
    assert!(rehearsal.contains("by carol on the data as it is now"), "{rehearsal}");
    assert!(
        rehearsal.contains("ledger: 0 processed, 4 failed (4 of them would be retried), 0 skipped"),
        "the cause is not fixed: {rehearsal}"
    );
    assert!(
        rehearsal.contains("4 failed, would be retried: contribution <id> has not been submitted yet"),
        "one group, whatever the contribution: {rehearsal}"
    );

    // Applied anyway, with a canary of 2: it halts after them.
    browser.fill("#confirm", &plan_id[..8]).await;
    browser.fill("#canary", "2").await;
    browser.fill("#canary-wait", "20s").await;
    browser.follow("#apply-button").await;
    assert_eq!(browser.path().await, plan_path);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        browser.client.goto(&console.at(&plan_path)).await.unwrap();
        if browser.text("#progress-ending").await.contains("halted after the canary: 2 of 2 canary events failed") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", browser.text("#progress-ending").await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(browser.text("#progress-state").await, "halted", "the run's state says it halted");
    browser.screenshot("plan-canary-halted").await;
    let published =
        world.scalar(&format!("SELECT published FROM replay_control.replay_runs WHERE plan_id = '{plan_id}'")).await;
    assert_eq!(published, 2, "only the canary was published");
    let halts = world
        .scalar(&format!("SELECT count(*) FROM replay_control.audit_log WHERE action = 'replay.halt' AND operator = 'otto' AND details->>'plan_id' = '{plan_id}'"))
        .await;
    assert_eq!(halts, 1, "the halt is audited under the operator");

    // A canary wait that is no duration: 400 with the words, nothing applied.
    browser.client.goto(&console.at(&plan_path)).await.unwrap();
    browser.fill("#confirm", &plan_id[..8]).await;
    browser.fill("#canary", "2").await;
    browser.fill("#canary-wait", "soon").await;
    browser.follow("#apply-button").await;
    assert!(
        browser.text("p.error").await.contains("canary_wait 'soon' is not a duration"),
        "{}",
        browser.text("p.error").await
    );

    browser.close().await;
    console.stop().await;
    worker.stop().await;
    world.cleanup().await;
}
