//! `replay rehearse` as an operator runs it before an apply: the plan run on
//! a scratch copy of the database, what it would change table by table,
//! and production exactly as it was (no row, no message, no provider call,
//! no scratch database left).
#![allow(clippy::unwrap_used)] // a test that cannot read its own database should fail loudly

use std::time::Duration;

use crate::common::*;
use serde_json::Value;
use sqlx::PgPool;

/// Production as a rehearsal must leave it.
#[derive(Debug, PartialEq, Eq)]
struct Untouched {
    ledger: String,
    domain: String,
    queue: u32,
}

async fn production(world: &World) -> Untouched {
    Untouched {
        ledger: world.ledger_digest().await,
        domain: world.domain_digest().await,
        queue: world.queue_depth().await,
    }
}

/// Runs `replay rehearse PLAN --json`, expects exit 0 and returns its answer.
async fn rehearse(world: &World, plan: &Value) -> Value {
    let out = world.replay(&["rehearse", plan["plan_path"].as_str().unwrap(), "--json", "--operator", "carol"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    serde_json::from_str(&stdout_of(&out)).unwrap()
}

async fn database_exists(world: &World, name: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&world.pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_period_close_rehearsal_shows_corrupt_allocations_recomputed_and_changes_nothing(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    world.cooperative_processed().await;
    // INC-9: the allocations were overwritten; the close must be redone.
    sqlx::query("UPDATE allocations SET amount = 0").execute(&world.pool).await.unwrap();
    let plan = desk
        .plan(&world, &["--workflow", "period-close", "--period", "latest-closed", "--reason", "recalc after INC-9"])
        .await;
    let before = production(&world).await;

    let rehearsal = rehearse(&world, &plan).await;

    assert_eq!(rehearsal["plan_id"], plan["plan_id"]);
    assert_eq!(rehearsal["plan_digest"], plan["digest"]);
    let allocations = &rehearsal["tables"]["allocations"];
    assert_eq!((allocations["added"].as_u64(), allocations["changed"].as_u64()), (Some(0), Some(1)), "{allocations}");
    assert_eq!(allocations["sums"]["amount"]["before"], "0.00", "{allocations}");
    assert_eq!(allocations["sums"]["amount"]["after"], "70.00", "{allocations}");
    assert_eq!(allocations["examples"][0]["changes"]["amount"]["after"], "70.00", "{allocations}");
    assert!(allocations["examples"][0]["key"]["id"].is_string(), "{allocations}");
    for table in ["members", "contributions", "payments", "provider_calls"] {
        let t = &rehearsal["tables"][table];
        assert_eq!(
            (t["added"].as_u64(), t["removed"].as_u64(), t["changed"].as_u64()),
            (Some(0), Some(0), Some(0)),
            "{table}: {t}"
        );
    }
    let ledger = &rehearsal["ledger"];
    assert_eq!((ledger["processed"].as_i64(), ledger["failed"].as_i64()), (Some(1), Some(0)), "{ledger}");
    assert_eq!(ledger["errors"], serde_json::json!([]));
    assert_eq!(rehearsal["external_effects"], serde_json::json!([]));

    assert_eq!(production(&world).await, before, "production changed: a row or a message");
    assert_eq!(
        world.scalar("SELECT sum(amount)::bigint FROM allocations").await,
        0,
        "production's allocations as they were"
    );
    let scratch = rehearsal["database"].as_str().unwrap();
    assert!(scratch.starts_with("replay_rehearsal_"), "{scratch}");
    assert!(!database_exists(&world, scratch).await, "the scratch database {scratch} is dropped");

    // For people: the table, the sum and where it went.
    let out = world.replay(&["rehearse", plan["plan_path"].as_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(text.contains("allocations: 0 added, 0 removed, 1 changed"), "{text}");
    assert!(text.contains("allocations.amount: 0.00 → 70.00"), "{text}");
    assert!(text.contains("members: unchanged"), "{text}");
    assert_eq!(production(&world).await, before);
    world.cleanup().await;
}

#[sqlx::test]
async fn a_payment_replay_rehearsal_reports_the_provider_call_it_would_make_and_makes_none(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    world.cooperative().await;
    let worker = world.start_worker(world.worker_config("w1"));
    world.wait_for_count(PROCESSED, 6, Duration::from_secs(20)).await;
    let paying = world.paying_the_allocation().await;
    world.publish(&paying).await;
    world.wait_for_count(PROCESSED, 9, Duration::from_secs(20)).await;
    worker.stop().await;
    assert_eq!(world.scalar("SELECT count(*) FROM provider_calls").await, 1);
    // INC-12: the provider lost the call; the operator means to force it again.
    let plan =
        desk.plan(&world, &["--type", "payment.initiated", "--force", "--reason", "INC-12: provider lost it"]).await;
    let before = production(&world).await;

    let rehearsal = rehearse(&world, &plan).await;

    let payment = paying[1].payload["payment_id"].as_str().unwrap();
    let effects = rehearsal["external_effects"].as_array().unwrap();
    assert_eq!(effects.len(), 1, "{effects:?}");
    assert_eq!(effects[0]["event_type"], "payment.initiated");
    assert_eq!(effects[0]["event_id"], paying[1].event_id.as_str());
    let effect = effects[0]["effect"].as_str().unwrap();
    assert!(effect.contains(&format!("would call the payment provider for payment {payment}")), "{effect}");
    assert!(effect.contains("forced by plan"), "{effect}");
    let calls = &rehearsal["tables"]["provider_calls"];
    assert_eq!(calls["added"].as_u64(), Some(0), "not even the scratch copy records a call: {calls}");
    assert_eq!(rehearsal["ledger"]["processed"].as_i64(), Some(1), "{}", rehearsal["ledger"]);

    assert_eq!(production(&world).await, before, "production changed: a row or a message");
    assert_eq!(world.scalar("SELECT count(*) FROM provider_calls").await, 1, "no provider call");
    assert!(!database_exists(&world, rehearsal["database"].as_str().unwrap()).await);

    // --keep leaves the scratch database for inspection, holding the rehearsed state.
    let out = world.replay(&["rehearse", plan["plan_path"].as_str().unwrap(), "--keep", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let kept: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    let name = kept["database"].as_str().unwrap();
    assert_eq!(kept["kept"], true);
    assert!(database_exists(&world, name).await, "{name} is kept");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)"))).execute(&world.pool).await.unwrap();
    assert_eq!(production(&world).await, before);
    world.cleanup().await;
}

/// A period whose allocations were overwritten (INC-9) and the period-close
/// plan that redoes them: the set-up of the rehearsal-then-apply tests.
async fn corrupt_allocations_and_plan_the_close(world: &World, desk: &Desk) -> Value {
    world.cooperative_processed().await;
    sqlx::query("UPDATE allocations SET amount = 0").execute(&world.pool).await.unwrap();
    desk.plan(world, &["--workflow", "period-close", "--period", "latest-closed", "--reason", "recalc after INC-9"])
        .await
}

#[sqlx::test]
async fn apply_shows_the_kept_rehearsal_and_require_rehearsal_refuses_without_one_or_after_the_data_changed(
    pool: PgPool,
) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    let plan = corrupt_allocations_and_plan_the_close(&world, &desk).await;
    let path = plan["plan_path"].as_str().unwrap();
    let before = production(&world).await;
    let applies = "SELECT count(*) FROM replay_control.audit_log WHERE action = 'replay.apply'";

    // Not rehearsed: refused, and nothing changed; without the flag the
    // plan's check says so and how.
    let out = desk.apply(&world, path, &["--yes", "--require-rehearsal"]).await;
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("the plan has not been rehearsed"), "{stderr}");
    assert!(stderr.contains(&format!("run `replay rehearse {path}`")), "{stderr}");
    assert_eq!(production(&world).await, before);
    assert_eq!(world.scalar(applies).await, 0);
    assert!(desk.backup_files().is_empty(), "no backup for a refused plan");
    let out = desk.apply(&world, path, &["--dry-run"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains(&format!("not rehearsed: `replay rehearse {path}`")), "{}", stdout_of(&out));

    // Rehearsed: the report is kept beside the plan, and apply shows it.
    let rehearsal = rehearse(&world, &plan).await;
    let report = std::path::PathBuf::from(rehearsal["report_path"].as_str().unwrap());
    assert!(report.exists(), "{}", report.display());
    assert_eq!(report.parent(), std::path::Path::new(path).parent(), "beside the plan");
    let out = desk.apply(&world, path, &["--dry-run", "--require-rehearsal"]).await;
    let text = stdout_of(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(text.contains("by carol on the data as it is now"), "{text}");
    assert!(text.contains("allocations: 0 added, 0 removed, 1 changed; amount 0.00 → 70.00"), "{text}");
    assert!(text.contains("ledger: 1 processed, 0 failed"), "{text}");

    // A member joins: the data is no longer the data rehearsed.
    let members = world.scalar("SELECT count(*) FROM members").await;
    sqlx::query("INSERT INTO members (id, joined_at) VALUES (gen_random_uuid(), now())")
        .execute(&world.pool)
        .await
        .unwrap();
    let changed = production(&world).await;
    let out = desk.apply(&world, path, &["--yes", "--require-rehearsal"]).await;
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("production changed since the plan was rehearsed"), "{stderr}");
    assert!(stderr.contains(&format!("members ({members} → {} rows)", members + 1)), "{stderr}");
    assert!(stderr.contains(&format!("rehearse it again with `replay rehearse {path}`")), "{stderr}");
    assert_eq!(production(&world).await, changed);
    assert_eq!(world.scalar(applies).await, 0);

    // Rehearsed again, then edited by hand: not the report rehearse wrote.
    rehearse(&world, &plan).await;
    let kept = std::fs::read_to_string(&report).unwrap();
    std::fs::write(&report, kept.replace("70.00", "99.00")).unwrap();
    let out = desk.apply(&world, path, &["--yes", "--require-rehearsal"]).await;
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("is not the rehearsal `replay rehearse` wrote for this plan"), "{stderr}");
    assert_eq!(world.scalar(applies).await, 0);

    // Rehearsed on the data as it is: applied.
    rehearse(&world, &plan).await;
    let out = desk.apply(&world, path, &["--yes", "--require-rehearsal"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("on the data as it is now"), "{}", stdout_of(&out));
    assert_eq!(world.scalar(applies).await, 1);
    world.cleanup().await;
}

#[sqlx::test]
async fn a_rehearsal_on_another_server_makes_its_scratch_database_there(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    let plan = corrupt_allocations_and_plan_the_close(&world, &desk).await;
    let path = plan["plan_path"].as_str().unwrap();
    let before = production(&world).await;
    let staging = PrivatePostgres::start().await;
    let databases = staging.databases().await;

    let out = world.replay(&["rehearse", path, "--json", "--keep", "--rehearsal-url", &staging.url]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let kept: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    let name = kept["database"].as_str().unwrap();
    assert_eq!(kept["tables"]["allocations"]["sums"]["amount"]["after"], "70.00", "{kept}");
    assert!(staging.databases().await.contains(&name.to_string()), "{name} is on the other server");
    assert!(!database_exists(&world, name).await, "and not on production's");
    let scratch = sqlx::PgPool::connect(&staging.url_of(name)).await.unwrap();
    let sum: i64 = sqlx::query_scalar("SELECT sum(amount)::bigint FROM allocations").fetch_one(&scratch).await.unwrap();
    assert_eq!(sum, 70, "the kept copy holds the rehearsed state");
    scratch.close().await;
    assert_eq!(production(&world).await, before);

    // Not kept: dropped from the other server; a server that is not there
    // is an error that leaves nothing behind.
    let out = world.replay(&["rehearse", path, "--json", "--rehearsal-url", &staging.url]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let mut expected = databases.clone();
    expected.push(name.to_string());
    expected.sort();
    assert_eq!(staging.databases().await, expected, "only the kept one stays");
    let out = world.replay(&["rehearse", path, "--rehearsal-url", "postgres://postgres@127.0.0.1:1/postgres"]).await;
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr_of(&out).contains("127.0.0.1:1"), "it names the server: {}", stderr_of(&out));
    assert_eq!(production(&world).await, before);
    world.cleanup().await;
}

#[sqlx::test]
async fn a_destination_plan_has_nothing_to_rehearse(pool: PgPool) {
    let world = World::new(pool).await;
    let desk = Desk::new();
    world.cooperative_processed().await;
    let queue = format!("{}-new-subscriber", world.endpoints.queue);
    let plan = desk
        .plan(
            &world,
            &[
                "--type",
                "contribution.approved",
                "--destination",
                &format!("queue:{queue}"),
                "--reason",
                "history for a new subscriber",
            ],
        )
        .await;
    let out = world.replay(&["rehearse", plan["plan_path"].as_str().unwrap()]).await;
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(&format!("sends its events to queue {queue}")), "{stderr}");
    assert!(stderr.contains("nothing to rehearse"), "{stderr}");
    world.cleanup().await;
}
