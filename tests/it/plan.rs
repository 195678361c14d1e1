//! `replay plan` as an operator runs it: selectors in, a summary and a sealed
//! plan file out, nothing changed in the database.
#![allow(clippy::unwrap_used)] // a test that cannot read its own database should fail loudly

use crate::common::*;
use replay::replay::plan::SealedPlan;
use serde_json::Value;
use sqlx::PgPool;

async fn seed(world: &World) {
    sqlx::query(
        "INSERT INTO processed_events (event_id, event_type, payload, occurred_at, status, processed_at, error_message) VALUES
         ('e1', 'contribution.submitted', '{\"contribution_id\": \"c-1\"}', '2026-01-10T10:00:00Z', 'error', '2026-01-10T10:00:01Z', 'boom'),
         ('e2', 'contribution.submitted', '{\"contribution_id\": \"c-2\"}', '2026-01-11T10:00:00Z', 'error', '2026-01-11T10:00:01Z', 'boom'),
         ('e3', 'payment.initiated', '{\"payment_id\": \"p-1\"}', '2026-01-12T10:00:00Z', 'processed', '2026-01-12T10:00:01Z', NULL),
         ('e4', 'period.opened', '{\"period_id\": \"x\"}', '2026-01-12T11:00:00Z', 'processed', '2026-01-12T11:00:01Z', NULL)",
    )
    .execute(&world.pool)
    .await
    .unwrap();
}

async fn ledger_state(world: &World) -> String {
    sqlx::query_scalar("SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM processed_events t")
        .fetch_one(&world.pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn plan_failed_events_writes_a_sealed_file_and_changes_nothing(pool: PgPool) {
    let world = World::new(pool).await;
    seed(&world).await;
    let before = ledger_state(&world).await;
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();

    let out =
        world.replay(&["plan", "--status", "error", "--reason", "bug 42 fixed", "--out-dir", out_dir, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let answer: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(answer["rows"], 2);
    assert_eq!(answer["by_type"]["contribution.submitted"], 2);
    assert_eq!(answer["warnings"].as_array().unwrap().len(), 0);
    let path = answer["plan_path"].as_str().unwrap();
    let plan = SealedPlan::open(std::path::Path::new(path)).unwrap();
    assert_eq!(plan.header.reason, "bug 42 fixed");
    let rows: Vec<_> = plan.rows(100).unwrap().flat_map(Result::unwrap).map(|r| r.event_id).collect();
    assert_eq!(rows, ["e1", "e2"]);
    assert_eq!(answer["plan_id"], plan.header.plan_id.to_string());
    assert_eq!(ledger_state(&world).await, before, "planning changes nothing");

    let out = world.replay(&["plan", "--type", "payment.initiated", "--reason", "r", "--out-dir", out_dir]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(
        text.contains("1 row to replay, 1 event to publish") && text.contains("--allow-external-effects"),
        "{text}"
    );
    assert!(text.contains("plan written to"), "{text}");
    world.cleanup().await;
}

#[sqlx::test]
async fn nothing_to_replay_writes_no_file(pool: PgPool) {
    let world = World::new(pool).await;
    seed(&world).await;
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    let out = world
        .replay(&[
            "plan",
            "--type",
            "x'); DROP TABLE processed_events; --",
            "--reason",
            "r",
            "--out-dir",
            out_dir,
            "--json",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let answer: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!((answer["rows"].clone(), answer["plan_path"].clone()), (Value::from(0), Value::Null));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events").await, 4);

    let out = world.replay(&["plan", "--event-id", "nope", "--reason", "r", "--out-dir", out_dir]).await;
    assert!(stdout_of(&out).contains("nothing to replay"), "{}", stdout_of(&out));
    world.cleanup().await;
}

#[sqlx::test]
async fn bad_selectors_are_usage_errors(pool: PgPool) {
    let world = World::new(pool).await;
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_str().unwrap();
    for (args, expected) in [
        (vec!["--from", "2026-02-01", "--to", "2026-01-01", "--reason", "r"], "is after --to"),
        (vec!["--from", "yesterday", "--reason", "r"], "--from 'yesterday' is not a time"),
        (vec!["--status", "failed", "--reason", "r"], "not a ledger status"),
        (vec!["--payload", "novalue", "--reason", "r"], "is not KEY=VALUE"),
        (vec!["--type", "x"], "--reason"),
        (vec!["--reason", "r"], "nothing selected"),
        (vec!["--workflow", "year-end", "--reason", "r"], "unknown workflow 'year-end'"),
        (vec!["--workflow", "period-close", "--period", "not-a-uuid", "--reason", "r"], "is not a UUID"),
        (vec!["--workflow", "member-allocations", "--period", "latest-closed", "--reason", "r"], "needs --member"),
    ] {
        let mut full = vec!["plan", "--out-dir", out_dir];
        full.extend(args);
        let out = world.replay(&full).await;
        assert_eq!(out.status.code(), Some(2), "{full:?}: {}", stderr_of(&out));
        assert!(stderr_of(&out).contains(expected), "{full:?}: {}", stderr_of(&out));
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    world.cleanup().await;
}
