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
    world.cooperative().await;
    let worker = world.start_worker(world.worker_config("w1"));
    world.wait_for_count(PROCESSED, 6, Duration::from_secs(20)).await;
    worker.stop().await;
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
