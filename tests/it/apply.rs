//! `replay apply` as an operator runs it: the runbook's replays, each with
//! its backup on disk and its audit entry, every refusal (exit 3, nothing
//! changed), pausing (exit 4), and resuming after an interrupt or a crash.
#![allow(clippy::unwrap_used)] // a test that cannot read its own database should fail loudly

use std::path::PathBuf;
use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// Applies a plan with `--yes` and checks what every apply must leave: exit
/// 0, one checked backup on disk, one audit entry naming the plan and that backup.
async fn apply_ok(world: &World, desk: &Desk, plan: &Value, args: &[&str]) -> Value {
    let path = plan["plan_path"].as_str().unwrap();
    let mut full = vec!["--yes", "--json"];
    full.extend(args);
    let out = desk.apply(world, path, &full).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let outcome: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    let backup = outcome["backup_path"].as_str().unwrap();
    assert!(desk.backup_files().contains(&PathBuf::from(backup)), "{backup} is in the backup directory");
    let listing = std::process::Command::new("pg_restore").args(["--list", backup]).output().unwrap();
    assert!(listing.status.success() && String::from_utf8_lossy(&listing.stdout).contains("processed_events"));
    let (operator, details): (String, Value) = sqlx::query_as(
        "SELECT operator, details FROM replay_control.audit_log WHERE action = 'replay.apply' AND details->>'plan_id' = $1",
    )
    .bind(plan["plan_id"].as_str().unwrap())
    .fetch_one(&world.pool)
    .await
    .unwrap();
    assert_eq!(operator, "bob");
    assert_eq!(details["backup_path"], backup);
    assert_eq!(details["plan_digest"], plan["digest"]);
    assert_eq!(details["rows"], plan["rows"]);
    outcome
}

/// The event ids a plan reset, by its replay history, sorted.
async fn reset_by(world: &World, plan: &Value) -> Vec<String> {
    let plan_id: Uuid = plan["plan_id"].as_str().unwrap().parse().unwrap();
    sqlx::query_scalar("SELECT event_id FROM replay_history WHERE plan_id = $1 ORDER BY event_id")
        .bind(plan_id)
        .fetch_all(&world.pool)
        .await
        .unwrap()
}

/// The ids of `events`, sorted.
fn ids_of(events: &[replay::wire::envelope::Event]) -> Vec<String> {
    let mut ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
    ids.sort();
    ids
}

async fn audit_entries(world: &World) -> i64 {
    world.scalar("SELECT count(*) FROM replay_control.audit_log").await
}

#[sqlx::test]
async fn failed_events_are_replayed_once_the_cause_is_fixed(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    let (period, member, contribution) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    // The approval arrives and exhausts its attempts before its submission exists.
    let approval = approved(contribution);
    world.publish(&[period_opened(period), approval.clone()]).await;
    let worker = world.start_worker(world.worker_config("w1"));
    world
        .wait_for_count("SELECT count(*) FROM processed_events WHERE status = 'error'", 1, Duration::from_secs(20))
        .await;
    let (_, _, first_error) = world.status_of(&approval.event_id).await.unwrap();
    // The fix: the missing submission is published.
    world.publish(&[submitted(contribution, member, period, 40)]).await;
    world.wait_for_count(PROCESSED, 2, Duration::from_secs(20)).await;

    let plan = desk.plan(&world, &["--status", "error", "--reason", "INC-7: approval before submission"]).await;
    assert_eq!((plan["rows"].clone(), plan["by_type"].clone()), (json!(1), json!({"contribution.approved": 1})));
    let outcome = apply_ok(&world, &desk, &plan, &[]).await;
    world.wait_for_count(PROCESSED, 3, Duration::from_secs(20)).await;
    worker.stop().await;

    // The backup, taken while the reset ran, holds the row as it was before.
    let dump = std::process::Command::new("pg_restore")
        .args(["--data-only", "--table", "processed_events", "--file", "-"])
        .arg(outcome["backup_path"].as_str().unwrap())
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    let line = dump.lines().find(|l| l.contains(&approval.event_id)).expect("the row is in the backup");
    assert!(line.contains("\terror\t"), "{line}");

    assert_eq!(world.contribution_status(contribution).await, "approved");
    // The replay kept why the event had failed.
    let out = world.replay(&["events", "show", &approval.event_id, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let shown: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(shown["event"]["status"], "processed");
    let history = &shown["replay_history"][0];
    assert_eq!((history["prior_status"].clone(), history["operator"].clone()), (json!("error"), json!("bob")));
    assert_eq!(history["prior_error"].as_str(), first_error.as_deref());
    assert_eq!(history["prior_retry_count"], 3);
    assert_eq!(history["plan_id"], plan["plan_id"]);
    let out = world.replay(&["events", "show", &approval.event_id]).await;
    assert!(stdout_of(&out).contains("it was error, 3 retries"), "{}", stdout_of(&out));

    let out = world.replay(&["status", plan["plan_path"].as_str().unwrap(), "--json"]).await;
    let status: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!((status["state"].clone(), status["by_status"].clone()), (json!("done"), json!({"processed": 1})));
    world.cleanup().await;
}

#[sqlx::test]
async fn selections_by_range_type_event_and_payload_replay_exactly_their_rows(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    let period = Uuid::new_v4();
    let at = |day: u32| format!("2026-01-{day:02}T12:00:00Z").parse().unwrap();
    let mut events = vec![event_at(
        "period.opened",
        json!({"period_id": period, "start_date": "2026-01-01", "end_date": "2026-03-31"}),
        at(1),
    )];
    let contributions: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    for (day, c) in contributions.iter().enumerate() {
        let payload = json!({"contribution_id": c, "member_id": Uuid::new_v4(), "period_id": period, "type": "labor", "amount": 10});
        events.push(event_at("contribution.submitted", payload, at(day as u32 + 2)));
    }
    world.publish(&events).await;
    let worker = world.start_worker(world.worker_config("w1"));
    world.wait_for_count(PROCESSED, 7, Duration::from_secs(20)).await;

    // January 3rd to 5th, contributions only: three rows.
    let range = desk
        .plan(
            &world,
            &["--type", "contribution.submitted", "--from", "2026-01-03", "--to", "2026-01-05", "--reason", "range"],
        )
        .await;
    assert_eq!(range["rows"], 3);
    assert_eq!(range["by_day"], json!({"2026-01-03": 1, "2026-01-04": 1, "2026-01-05": 1}));
    apply_ok(&world, &desk, &range, &[]).await;
    world.wait_for_count(PROCESSED, 7, Duration::from_secs(20)).await;
    let replayed = world.scalar("SELECT count(DISTINCT event_id) FROM replay_history").await;
    assert_eq!(replayed, 3);
    // Which three: the submissions of January 3rd, 4th and 5th, applied again.
    let (in_range, outside) = (&events[2..5], [&events[..2], &events[5..]].concat());
    assert_eq!(reset_by(&world, &range).await, ids_of(in_range));
    world.assert_applied(in_range, 2).await;
    world.assert_applied(&outside, 1).await;

    let single = desk.plan(&world, &["--event-id", &events[1].event_id, "--reason", "one"]).await;
    assert_eq!(single["rows"], 1);
    apply_ok(&world, &desk, &single, &[]).await;
    assert_eq!(reset_by(&world, &single).await, [events[1].event_id.clone()], "the one event named is reset");

    let field = format!("contribution_id={}", contributions[5]);
    let by_payload = desk.plan(&world, &["--payload", &field, "--reason", "payload"]).await;
    assert_eq!(
        (by_payload["rows"].clone(), by_payload["by_type"].clone()),
        (json!(1), json!({"contribution.submitted": 1}))
    );
    apply_ok(&world, &desk, &by_payload, &[]).await;
    // The submission of contributions[5], the seventh event.
    assert_eq!(reset_by(&world, &by_payload).await, [events[6].event_id.clone()], "the payload's event is reset");
    world.wait_for_count(PROCESSED, 7, Duration::from_secs(20)).await;
    worker.stop().await;

    assert_eq!(world.scalar("SELECT count(*) FROM replay_history").await, 5);
    // Each selected event applied twice (once, then by its one replay), the
    // two never selected (the period's opening, January 6th's submission) once.
    world.assert_applied(&[events[1].clone(), events[6].clone()], 2).await;
    world.assert_applied(in_range, 2).await;
    world.assert_applied(&[events[0].clone(), events[5].clone()], 1).await;
    world.assert_each_applied_once().await;
    assert_eq!(world.scalar("SELECT count(*) FROM contributions").await, 6);
    assert_eq!(audit_entries(&world).await, 3);
    assert_eq!(desk.backup_files().len(), 3);
    world.cleanup().await;
}

#[sqlx::test]
async fn replaying_every_processed_event_through_apply_leaves_the_domain_as_it_was(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    let (_, _) = world.cooperative().await;
    let worker = world.start_worker(world.worker_config("w1"));
    world.wait_for_count(PROCESSED, 6, Duration::from_secs(20)).await;
    world.publish(&world.paying_the_allocation().await).await;
    world.wait_for_count(PROCESSED, 9, Duration::from_secs(20)).await;
    let before = world.domain_digest().await;

    let plan = desk.plan(&world, &["--all", "--reason", "audit the whole history"]).await;
    assert_eq!(plan["rows"], 9);
    assert!(plan["warnings"][0].as_str().unwrap().contains("payment.initiated"));
    apply_ok(&world, &desk, &plan, &["--allow-external-effects", "--rate", "1000"]).await;
    world.wait_for_count(PROCESSED, 9, Duration::from_secs(20)).await;
    worker.stop().await;

    assert_eq!(world.domain_digest().await, before, "replaying processed events changed the domain tables");
    assert_eq!(world.scalar("SELECT count(*) FROM provider_calls").await, 1, "the provider is called once");
    world.cleanup().await;
}

#[sqlx::test]
async fn a_forced_replay_skips_the_idempotency_guard_and_calls_the_provider_again(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    world.cooperative().await;
    let worker = world.start_worker(world.worker_config("w1"));
    world.wait_for_count(PROCESSED, 6, Duration::from_secs(20)).await;
    world.publish(&world.paying_the_allocation().await).await;
    world.wait_for_count(PROCESSED, 9, Duration::from_secs(20)).await;
    assert_eq!(world.scalar("SELECT count(*) FROM provider_calls").await, 1);

    // The provider lost the call: the operator forces the initiation again.
    let plan =
        desk.plan(&world, &["--type", "payment.initiated", "--force", "--reason", "INC-12: provider lost it"]).await;
    let warnings = plan["warnings"].to_string();
    assert!(warnings.contains("--force") && warnings.contains("payment.initiated"), "{warnings}");
    apply_ok(&world, &desk, &plan, &["--allow-external-effects"]).await;
    world
        .wait_for_count(
            "SELECT count(*) FROM provider_calls WHERE forced_by_plan IS NOT NULL",
            1,
            Duration::from_secs(20),
        )
        .await;
    world.wait_for_count(PROCESSED, 9, Duration::from_secs(20)).await;
    assert_eq!(world.scalar("SELECT count(*) FROM provider_calls").await, 2, "called once more, not twice more");
    assert_eq!(world.scalar("SELECT count(*) FROM payments").await, 1, "still one payment");
    assert_eq!(
        world.scalar("SELECT count(*) FROM processed_events WHERE replay_forced_by IS NOT NULL").await,
        0,
        "the force ends with the row's settlement"
    );

    // An ordinary replay of the same event leaves the provider alone again.
    let plan = desk.plan(&world, &["--type", "payment.initiated", "--reason", "check"]).await;
    apply_ok(&world, &desk, &plan, &["--allow-external-effects"]).await;
    world.wait_for_count("SELECT count(*) FROM replay_history", 2, Duration::from_secs(20)).await;
    world.wait_for_count(PROCESSED, 9, Duration::from_secs(20)).await;
    worker.stop().await;
    assert_eq!(world.scalar("SELECT count(*) FROM provider_calls").await, 2);
    world.cleanup().await;
}

#[sqlx::test]
async fn the_period_close_workflow_recomputes_allocations_and_refuses_paid_ones(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    let (period, member) = world.cooperative().await;
    let worker = world.start_worker(world.worker_config("w1"));
    world.wait_for_count(PROCESSED, 6, Duration::from_secs(20)).await;
    let before = world.domain_digest().await;

    // The runbook's case: the close must be redone over corrected contributions.
    let plan = desk
        .plan(&world, &["--workflow", "period-close", "--period", "latest-closed", "--reason", "recalc after INC-9"])
        .await;
    assert_eq!((plan["rows"].clone(), plan["events"].clone()), (json!(0), json!(1)));
    assert_eq!(plan["workflow"]["params"]["period"], period.to_string());
    assert_eq!(plan["workflow"]["domain_rows"], json!({"allocation_periods": 1, "allocations": 1}));
    apply_ok(&world, &desk, &plan, &[]).await;
    world
        .wait_for_count(
            "SELECT count(*) FROM processed_events WHERE event_type = 'period.close' AND status = 'processed'",
            2,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(world.domain_digest().await, before, "a replayed close over unchanged contributions changes nothing");

    // After a fix of a contribution's amount, the member-allocations workflow recomputes it.
    sqlx::query("UPDATE contributions SET amount = 75 WHERE member_id = $1 AND status = 'approved'")
        .bind(member)
        .execute(&world.pool)
        .await
        .unwrap();
    let member_arg = member.to_string();
    let period_arg = period.to_string();
    let plan = desk
        .plan(
            &world,
            &[
                "--workflow",
                "member-allocations",
                "--member",
                &member_arg,
                "--period",
                &period_arg,
                "--reason",
                "amount fixed",
            ],
        )
        .await;
    apply_ok(&world, &desk, &plan, &[]).await;
    world
        .wait_for_count(
            "SELECT count(*) FROM allocations WHERE amount = 75 AND status = 'calculated'",
            1,
            Duration::from_secs(20),
        )
        .await;

    // Money handed out is never recomputed: refused at plan time, nothing written.
    sqlx::query("UPDATE allocations SET status = 'paid'").execute(&world.pool).await.unwrap();
    let plans = desk.plans();
    let out = world
        .replay(&[
            "plan",
            "--workflow",
            "period-close",
            "--period",
            &period_arg,
            "--reason",
            "again",
            "--out-dir",
            &plans,
        ])
        .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("already distributed or paid (1 paid)"), "{}", stderr_of(&out));
    assert_eq!(std::fs::read_dir(&plans).unwrap().count(), 2, "no plan written");
    worker.stop().await;
    world.cleanup().await;
}

#[sqlx::test]
async fn every_refusal_exits_3_and_changes_nothing(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    world.cooperative().await;
    let payment = json!({"payment_id": Uuid::new_v4(), "allocation_id": Uuid::new_v4(), "amount": 1});
    world.publish(&[event("payment.initiated", payment)]).await;
    let worker = world.start_worker(world.worker_config("w1"));
    world
        .wait_for_count(
            "SELECT count(*) FROM processed_events WHERE status IN ('processed', 'error')",
            7,
            Duration::from_secs(30),
        )
        .await;
    worker.stop().await;

    let plan = desk.plan(&world, &["--type", "contribution.submitted", "--reason", "refusals"]).await;
    let path = plan["plan_path"].as_str().unwrap().to_string();
    let external = desk.plan(&world, &["--type", "payment.initiated", "--reason", "external"]).await;
    let before = world.ledger_digest().await;
    let refused = |out: std::process::Output, expected: &str| {
        assert_eq!(out.status.code(), Some(3), "{expected}: {}", stderr_of(&out));
        assert!(stderr_of(&out).contains(expected), "{expected}: {}", stderr_of(&out));
    };

    refused(desk.apply(&world, external["plan_path"].as_str().unwrap(), &["--yes"]).await, "--allow-external-effects");
    refused(desk.apply(&world, &path, &[]).await, "no terminal to confirm on");

    // Another apply (or an emergency stop) holds the lock.
    let mut holder = world.pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtext('replay_control.apply'))").execute(&mut *holder).await.unwrap();
    refused(
        desk.apply(&world, &path, &["--yes"]).await,
        "another `replay apply` or `replay emergency-stop` is running",
    );
    sqlx::query("SELECT pg_advisory_unlock(hashtext('replay_control.apply'))").execute(&mut *holder).await.unwrap();
    drop(holder);

    // Workers paused.
    sqlx::query("INSERT INTO replay_control.pause (operator, reason) VALUES ('carol', 'INC-12')")
        .execute(&world.pool)
        .await
        .unwrap();
    refused(desk.apply(&world, &path, &["--yes"]).await, "workers are paused since");
    sqlx::query("DELETE FROM replay_control.pause").execute(&world.pool).await.unwrap();

    // A backup older than allowed.
    let old = desk.dir.path().join("old.dump");
    let out = world.replay(&["backup", "--out", old.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let status = std::process::Command::new("touch").args(["-d", "2 hours ago"]).arg(&old).status().unwrap();
    assert!(status.success());
    refused(
        desk.apply(&world, &path, &["--yes", "--backup", old.to_str().unwrap()]).await,
        "older than --backup-max-age",
    );

    // The file was edited after planning.
    let edited = desk.dir.path().join("edited.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&edited, text.replacen("refusals", "something else", 1)).unwrap();
    refused(desk.apply(&world, edited.to_str().unwrap(), &["--yes"]).await, "edited after planning");

    // A dry run runs every check and changes nothing.
    let out = desk.apply(&world, &path, &["--dry-run"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("dry run: every check passed"), "{}", stdout_of(&out));

    assert_eq!(world.ledger_digest().await, before, "no refusal changed the ledger");
    assert_eq!(audit_entries(&world).await, 0);
    assert!(desk.backup_files().is_empty(), "no refusal took a backup");

    // A row changed since planning: stale, named.
    let changed: String = sqlx::query_scalar(
        "UPDATE processed_events SET retry_count = 1 WHERE id = (SELECT min(id) FROM processed_events WHERE event_type = 'contribution.submitted') RETURNING event_id",
    )
    .fetch_one(&world.pool)
    .await
    .unwrap();
    let before = world.ledger_digest().await;
    let out = desk.apply(&world, &path, &["--yes"]).await;
    refused(out, &format!("1 of its 2 rows changed since it was made (e.g. {changed}"));
    assert_eq!(world.ledger_digest().await, before);
    assert_eq!(audit_entries(&world).await, 0);
    world.cleanup().await;
}

#[sqlx::test]
async fn a_plan_made_for_another_database_is_refused(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    world.cooperative_processed().await;
    let plan = desk.plan(&world, &["--all", "--reason", "elsewhere"]).await;

    let other = format!("replay_other_{}", Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {other}"))).execute(&world.pool).await.unwrap();
    let mut url = url::Url::parse(&world.database_url).unwrap();
    url.set_path(&format!("/{other}"));
    let run = |args: Vec<String>| {
        let url = url.to_string();
        let env = world.env();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_replay"))
                .args(args)
                .envs(env)
                .env("DATABASE_URL", url)
                .output()
                .await
                .unwrap()
        }
    };
    assert_eq!(run(vec!["migrate".into()]).await.status.code(), Some(0));
    let out = run(vec!["apply".into(), plan["plan_path"].as_str().unwrap().into(), "--yes".into()]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("the plan was made for database '") && err.contains(&format!("but this is database '{other}'")),
        "{err}"
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {other} WITH (FORCE)"))).execute(&world.pool).await.unwrap();
    world.cleanup().await;
}

/// Waits until the plan's run has published at least `n` events.
async fn wait_published(world: &World, n: i64) {
    world
        .wait_for_count(
            &format!("SELECT count(*) FROM replay_control.replay_runs WHERE published >= {n}"),
            1,
            Duration::from_secs(30),
        )
        .await;
}

async fn seed_processed(world: &World, n: usize) {
    let events: Vec<_> = (0..n).map(|i| event("member.noted", json!({"n": i}))).collect();
    world.publish(&events).await;
    let worker = world.start_worker(world.worker_config("w1"));
    world
        .wait_for_count(
            "SELECT count(*) FROM processed_events WHERE status = 'skipped'",
            n as i64,
            Duration::from_secs(20),
        )
        .await;
    worker.stop().await;
    // The queue is empty: from now on it holds exactly what apply publishes.
    assert_eq!(world.queue_depth().await, 0);
}

#[sqlx::test]
async fn an_interrupted_apply_resumes_without_a_second_backup_or_audit_entry(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    seed_processed(&world, 40).await;
    let plan = desk.plan(&world, &["--all", "--reason", "resume"]).await;
    let path = plan["plan_path"].as_str().unwrap();

    // Ctrl-C part way: the batch in flight is confirmed, then it stops.
    let apply = desk.spawn_apply(&world, path, "20", &[]);
    wait_published(&world, 5).await;
    nix_kill(&apply, "INT");
    let out = apply.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("run the same `replay apply` again to continue"), "{}", stderr_of(&out));
    let published = world.scalar("SELECT published FROM replay_control.replay_runs").await;
    assert!(published < 40, "interrupted before the end ({published})");
    assert_eq!(world.queue_depth().await as i64, published, "every confirmed event is in the queue, no more");

    // A crash part way (kill -9) after resuming once more.
    let apply = desk.spawn_apply(&world, path, "20", &[]);
    wait_published(&world, published + 5).await;
    nix_kill(&apply, "KILL");
    let _ = apply.wait_with_output().await.unwrap();

    let out = desk.apply(&world, path, &["--yes"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("(resumed)"), "{}", stdout_of(&out));
    assert_eq!(world.scalar("SELECT published FROM replay_control.replay_runs WHERE state = 'done'").await, 40);
    assert_eq!(audit_entries(&world).await, 1, "one audit entry for the whole apply");
    assert_eq!(desk.backup_files().len(), 1, "one backup for the whole apply");
    let depth = world.queue_depth().await;
    // Only the batch in flight when it was killed may be published twice.
    assert!((40..=60).contains(&depth), "{depth} messages for 40 events");

    // The ledger dedupes the repeats: every event is processed once.
    let worker = world.start_worker(world.worker_config("w1"));
    world
        .wait_for_count("SELECT count(*) FROM processed_events WHERE status = 'skipped'", 40, Duration::from_secs(20))
        .await;
    worker.stop().await;
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events").await, 40);
    let out = desk.apply(&world, path, &["--yes"]).await;
    assert!(stdout_of(&out).contains("was already applied"), "{}", stdout_of(&out));
    world.cleanup().await;
}

#[sqlx::test]
async fn a_pause_stops_a_running_apply_with_exit_4(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    seed_processed(&world, 30).await;
    let plan = desk.plan(&world, &["--all", "--reason", "pause"]).await;
    let apply = desk.spawn_apply(&world, plan["plan_path"].as_str().unwrap(), "10", &[]);
    wait_published(&world, 2).await;
    sqlx::query("INSERT INTO replay_control.pause (operator, reason) VALUES ('carol', 'INC-13')")
        .execute(&world.pool)
        .await
        .unwrap();
    let out = apply.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("INC-13"), "{}", stderr_of(&out));
    let published = world.scalar("SELECT published FROM replay_control.replay_runs").await;
    assert!(published < 30);
    // Every reset row stays parked for its message: no claimer takes one.
    let due = world.scalar("SELECT count(*) FROM processed_events WHERE next_attempt_at <= now()").await;
    let parked = world
        .scalar("SELECT count(*) FROM processed_events WHERE status = 'pending' AND replay_plan IS NOT NULL")
        .await;
    assert_eq!((due, parked), (0, 30));
    assert_eq!(world.queue_depth().await as i64, published);
    world.cleanup().await;
}

fn nix_kill(child: &tokio::process::Child, signal: &str) {
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill").args([&format!("-{signal}"), pid.as_str()]).status().unwrap();
    assert!(status.success());
}

#[sqlx::test]
async fn a_failed_backup_resets_nothing_and_delivers_nothing(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    seed_processed(&world, 300).await;
    let plan = desk.plan(&world, &["--all", "--reason", "backup fails"]).await;
    let before = world.ledger_digest().await;
    // A backup directory that cannot be created: pg_dump never gets to write.
    let out = world
        .replay(&["apply", plan["plan_path"].as_str().unwrap(), "--yes", "--backup-dir", "/proc/replay-backups"])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("/proc/replay-backups"), "{}", stderr_of(&out));
    assert_eq!(world.ledger_digest().await, before, "the reset was rolled back");
    assert_eq!(audit_entries(&world).await, 0);
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.replay_runs").await, 0);
    // The events staged alongside the reset were never delivered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(world.queue_depth().await, 0);
    world.cleanup().await;
}

#[sqlx::test]
async fn a_row_changed_after_the_check_is_left_alone_and_reported(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    seed_processed(&world, 30).await;
    let plan = desk.plan(&world, &["--all", "--reason", "stale mid-way"]).await;
    let changed: String = sqlx::query_scalar("SELECT event_id FROM processed_events ORDER BY id OFFSET 4 LIMIT 1")
        .fetch_one(&world.pool)
        .await
        .unwrap();
    // The reset's first chunk waits on this row's lock; the row changes, then the lock goes.
    let mut holder = world.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM processed_events WHERE event_id = $1 FOR UPDATE")
        .bind(&changed)
        .execute(&mut *holder)
        .await
        .unwrap();
    let apply = desk.spawn_apply(&world, plan["plan_path"].as_str().unwrap(), "1000", &[]);
    wait_until_waiting_on_a_lock(&world).await;
    sqlx::query("UPDATE processed_events SET processed_at = now() WHERE event_id = $1")
        .bind(&changed)
        .execute(&mut *holder)
        .await
        .unwrap();
    holder.commit().await.unwrap();
    let out = apply.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(
        stdout_of(&out).contains("left alone: 1 planned rows changed after the plan was checked"),
        "{}",
        stdout_of(&out)
    );
    assert_eq!(world.status_of(&changed).await.unwrap().0, "skipped", "the changed row is not reset");
    let history = reset_by(&world, &plan).await;
    assert_eq!(history.len(), 29);
    assert!(!history.contains(&changed));
    assert_eq!(world.scalar("SELECT stale_rows FROM replay_control.replay_runs WHERE state = 'done'").await, 1);
    world.cleanup().await;
}

/// Waits until some session of the test database waits on a row lock.
async fn wait_until_waiting_on_a_lock(world: &World) {
    world
        .wait_for_count(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
            1,
            Duration::from_secs(30),
        )
        .await;
}
