//! Operating commands: `events list`, `ledger prune`, `completions`, `man`.
#![allow(clippy::unwrap_used)] // a test that cannot read its own database should fail loudly

use crate::common::*;
use serde_json::Value;
use sqlx::PgPool;

async fn seed(world: &World) {
    sqlx::query(
        "INSERT INTO processed_events (event_id, event_type, payload, occurred_at, status, processed_at, error_message, received_at) VALUES
         ('old-1', 'contribution.submitted', '{\"contribution_id\": \"c-1\"}', now() - interval '100 days', 'processed', now() - interval '100 days', NULL, now() - interval '100 days'),
         ('old-2', 'contribution.submitted', '{\"contribution_id\": \"c-2\"}', now() - interval '100 days', 'processed', now() - interval '99 days', NULL, now() - interval '100 days'),
         ('old-err', 'payment.initiated', '{\"payment_id\": \"p-1\"}', now() - interval '100 days', 'error', now() - interval '100 days', 'provider down', now() - interval '100 days'),
         ('new-1', 'contribution.submitted', '{\"contribution_id\": \"c-3\"}', now(), 'processed', now(), NULL, now()),
         ('new-2', 'period.opened', '{\"period_id\": \"x\"}', now(), 'pending', NULL, NULL, now())",
    )
    .execute(&world.pool)
    .await
    .unwrap();
}

#[sqlx::test]
async fn events_list_filters_and_prints_newest_first(pool: PgPool) {
    let world = World::new(pool).await;
    seed(&world).await;
    let out = world.replay(&["events", "list", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let rows: Vec<Value> = serde_json::from_str(&stdout_of(&out)).unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["new-2", "new-1", "old-err", "old-2", "old-1"]);
    for field in ["event_type", "status", "retry_count", "error_message", "payload", "occurred_at", "processed_at"] {
        assert!(rows[0].get(field).is_some(), "{field} in {}", rows[0]);
    }

    let out = world.replay(&["events", "list", "--status", "error", "--json"]).await;
    let rows: Vec<Value> = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!((rows.len(), rows[0]["error_message"].as_str()), (1, Some("provider down")));
    let out = world.replay(&["events", "list", "--since", "1h", "--type", "contribution.submitted", "--json"]).await;
    let rows: Vec<Value> = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(rows.iter().map(|r| r["event_id"].as_str().unwrap()).collect::<Vec<_>>(), ["new-1"]);
    let out = world.replay(&["events", "list", "--payload", "contribution_id=c-2", "--json"]).await;
    let rows: Vec<Value> = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(rows.iter().map(|r| r["event_id"].as_str().unwrap()).collect::<Vec<_>>(), ["old-2"]);

    let out = world.replay(&["events", "list", "--limit", "2"]).await;
    let text = stdout_of(&out);
    let header = text.lines().nth(1).unwrap();
    assert!(header.contains("event id") && header.contains("status") && header.contains("error"), "{text}");
    assert!(
        text.contains("new-2") && !text.contains("old-1") && text.contains("2 row(s), newest first (--limit reached)"),
        "{text}"
    );
    let out = world.replay(&["events", "list", "--status", "done"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("not a ledger status"), "{}", stderr_of(&out));
    world.cleanup().await;
}

#[sqlx::test]
async fn prune_deletes_only_old_processed_rows_and_is_audited(pool: PgPool) {
    let world = World::new(pool).await;
    seed(&world).await;
    let out = world.replay(&["ledger", "prune", "--older-than", "90d"]).await;
    assert_eq!(out.status.code(), Some(3), "no terminal, no --yes: {}", stderr_of(&out));
    assert_eq!(world.scalar("SELECT count(*) FROM processed_events").await, 5);

    let out =
        world.replay(&["ledger", "prune", "--older-than", "90d", "--yes", "--batch", "1", "--operator", "erin"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("pruned 2 processed row(s)"), "{}", stdout_of(&out));
    let left: Vec<String> = sqlx::query_scalar("SELECT event_id FROM processed_events ORDER BY event_id")
        .fetch_all(&world.pool)
        .await
        .unwrap();
    assert_eq!(left, ["new-1", "new-2", "old-err"], "an old row in error is never pruned");
    let (operator, details): (String, Value) =
        sqlx::query_as("SELECT operator, details FROM replay_control.audit_log WHERE action = 'ledger.prune'")
            .fetch_one(&world.pool)
            .await
            .unwrap();
    assert_eq!((operator.as_str(), details["deleted"].as_u64()), ("erin", Some(2)));
    let out = world.replay(&["ledger", "prune", "--older-than", "90d", "--yes"]).await;
    assert!(stdout_of(&out).contains("nothing to prune"), "{}", stdout_of(&out));
    world.cleanup().await;
}

#[sqlx::test]
async fn prune_audits_each_batch_in_the_transaction_that_deletes_it(pool: PgPool) {
    let world = World::new(pool).await;
    seed(&world).await;
    // The audit log refuses every prune entry after the first: the second
    // batch's entry fails, and its deletes must fail with it.
    for statement in [
        "CREATE FUNCTION refuse_second_prune_entry() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.action LIKE 'ledger.prune%' AND EXISTS
              (SELECT 1 FROM replay_control.audit_log WHERE action LIKE 'ledger.prune%') THEN
             RAISE EXCEPTION 'audit log full (test)';
           END IF;
           RETURN NEW;
         END $$",
        "CREATE TRIGGER refuse_second_prune_entry BEFORE INSERT ON replay_control.audit_log
         FOR EACH ROW EXECUTE FUNCTION refuse_second_prune_entry()",
    ] {
        sqlx::query(statement).execute(&world.pool).await.unwrap();
    }
    let out =
        world.replay(&["ledger", "prune", "--older-than", "90d", "--yes", "--batch", "1", "--operator", "erin"]).await;
    assert_eq!(out.status.code(), Some(1), "the second batch fails: {}", stdout_of(&out));
    assert!(stderr_of(&out).contains("audit log full (test)"), "{}", stderr_of(&out));
    let entries: Vec<(String, Value)> = sqlx::query_as(
        "SELECT action, details FROM replay_control.audit_log WHERE action LIKE 'ledger.prune%' ORDER BY id",
    )
    .fetch_all(&world.pool)
    .await
    .unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!((entries[0].0.as_str(), entries[0].1["deleted"].as_u64()), ("ledger.prune.batch", Some(1)));
    // One old processed row went with its audited batch; the other stayed,
    // its batch rolled back with the entry that failed.
    let left = world.scalar("SELECT count(*) FROM processed_events").await;
    assert_eq!(left, 4, "one of the two old processed rows is deleted, not both");
    world.cleanup().await;
}

#[tokio::test]
async fn completions_and_man_page_come_from_the_cli_definition() {
    for shell in ["bash", "zsh", "fish"] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_replay"))
            .args(["completions", shell])
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&out.stdout).contains("emergency-stop"), "{shell}");
    }
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_replay")).arg("man").output().await.unwrap();
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH replay 1") && page.contains("emergency\\-stop"), "{page}");
}

#[sqlx::test]
async fn the_dlq_lists_reports_shows_and_resolves(pool: PgPool) {
    let world = World::new(pool).await;
    seed(&world).await;
    sqlx::query(
        "INSERT INTO dead_letters (exchange, routing_key, body, reason) VALUES ('x', 'member.noted', 'not json', 'message body is not JSON')",
    )
    .execute(&world.pool)
    .await
    .unwrap();
    let letter: i64 = world.scalar("SELECT id FROM dead_letters").await;

    let out = world.replay(&["dlq", "list", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let listed: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(listed["failed_events"][0]["event_id"], "old-err");
    assert_eq!(listed["failed_events"][0]["error_message"], "provider down");
    assert_eq!(listed["dead_letters"][0]["reason"], "message body is not JSON");
    let text = stdout_of(&world.replay(&["dlq", "list"]).await);
    assert!(
        text.contains(&format!("dl-{letter}")) && text.contains("1 failed event(s), 1 dead-lettered message(s)"),
        "{text}"
    );

    let out = world.replay(&["dlq", "report", "--hours", "24", "--json"]).await;
    let report: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(report["groups"].as_array().unwrap().len(), 1, "the 100-day-old failure is outside 24 h: {report}");
    let out = world.replay(&["dlq", "report", "--hours", "10000", "--json"]).await;
    let report: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    let groups = report["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert!(groups
        .iter()
        .any(|g| g["type"] == "payment.initiated" && g["error"] == "provider down" && g["count"] == 1));

    let out = world.replay(&["dlq", "show", &format!("dl-{letter}")]).await;
    assert!(stdout_of(&out).contains("body (8 bytes)\nnot json"), "{}", stdout_of(&out));

    let out = world
        .replay(&["dlq", "resolve", "old-err", "--note", "provider fixed, paid by hand", "--operator", "erin"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let out = world.replay(&["dlq", "resolve", &format!("dl-{letter}"), "--note", "test message"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let listed: Value = serde_json::from_str(&stdout_of(&world.replay(&["dlq", "list", "--json"]).await)).unwrap();
    assert_eq!(
        (listed["failed_events"].clone(), listed["dead_letters"].clone()),
        (serde_json::json!([]), serde_json::json!([]))
    );
    assert_eq!(world.status_of("old-err").await.unwrap().0, "error", "resolving keeps the row and its error");
    assert_eq!(world.scalar("SELECT count(*) FROM replay_control.audit_log WHERE action = 'dlq.resolve'").await, 2);
    let out = world.replay(&["dlq", "resolve", "old-err", "--note", "again"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    world.cleanup().await;
}

#[sqlx::test]
async fn events_list_table_snapshot(pool: PgPool) {
    let world = World::new(pool).await;
    sqlx::query(
        "INSERT INTO processed_events (event_id, event_type, payload, occurred_at, status, processed_at, retry_count, error_message) VALUES
         ('e-1', 'period.opened', '{}', '2026-01-01T00:00:00Z', 'processed', '2026-01-01T00:00:01Z', 0, NULL),
         ('e-2', 'contribution.approved', '{}', '2026-01-02T00:00:00Z', 'error', '2026-01-02T00:00:05Z', 3, 'contribution c-9 has not been submitted yet')",
    )
    .execute(&world.pool)
    .await
    .unwrap();
    let out = world.replay(&["events", "list"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let expected = "\
+----------+-----------------------+-----------+---------+---------------------+---------------------+---------------------------------------------+
| event id | type                  | status    | retries | occurred at         | processed at        | error                                       |
+==================================================================================================================================================+
| e-2      | contribution.approved | error     | 3       | 2026-01-02 00:00:00 | 2026-01-02 00:00:05 | contribution c-9 has not been submitted yet |
|----------+-----------------------+-----------+---------+---------------------+---------------------+---------------------------------------------|
| e-1      | period.opened         | processed | 0       | 2026-01-01 00:00:00 | 2026-01-01 00:00:01 | -                                           |
+----------+-----------------------+-----------+---------+---------------------+---------------------+---------------------------------------------+
2 row(s), newest first
";
    assert_eq!(stdout_of(&out), expected);
    world.cleanup().await;
}
