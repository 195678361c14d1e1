//! The audit log: append-only in the database, tamper-evident by its chain.
#![allow(clippy::unwrap_used)] // a test that cannot read its own database should fail loudly

use crate::common::*;
use replay::store::audit::{self, AuditEntry, Verdict};
use serde_json::json;
use sqlx::PgPool;

async fn record(pool: &PgPool, action: &str) {
    let mut tx = pool.begin().await.unwrap();
    let entry =
        AuditEntry { operator: "ops".into(), action: action.into(), details: json!({"rows": 3, "plan": "p-1"}) };
    audit::append(&mut tx, &entry).await.unwrap();
    tx.commit().await.unwrap();
}

#[sqlx::test]
async fn the_audit_log_refuses_changes_and_reveals_tampering(pool: PgPool) {
    let world = World::new(pool).await;
    for action in ["replay.apply", "replay.stop", "replay.resume"] {
        record(&world.pool, action).await;
    }
    assert_eq!(audit::verify(&world.pool).await.unwrap(), Verdict::Intact { entries: 3 });
    let out = world.replay(&["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("audit log intact: 3 entries"));

    for statement in [
        "UPDATE replay_control.audit_log SET operator = 'mallory'",
        "DELETE FROM replay_control.audit_log WHERE id = 2",
        "TRUNCATE replay_control.audit_log",
    ] {
        let refused = sqlx::query(statement).execute(&world.pool).await.unwrap_err();
        assert!(refused.to_string().contains("append-only"), "{statement}: {refused}");
    }

    // Someone with the rights to bypass the triggers edits an entry.
    sqlx::query("ALTER TABLE replay_control.audit_log DISABLE TRIGGER audit_log_append_only")
        .execute(&world.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE replay_control.audit_log SET details = '{\"rows\": 0}' WHERE id = 2")
        .execute(&world.pool)
        .await
        .unwrap();
    assert!(matches!(audit::verify(&world.pool).await.unwrap(), Verdict::Broken { id: 2, .. }));
    let out = world.replay(&["audit", "verify"]).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr_of(&out).contains("audit log broken at entry 2"), "{}", stderr_of(&out));

    // Or deletes one: the next entry no longer chains.
    sqlx::query("DELETE FROM replay_control.audit_log WHERE id = 2").execute(&world.pool).await.unwrap();
    let Verdict::Broken { id, problem } = audit::verify(&world.pool).await.unwrap() else {
        panic!("a deletion must break the chain");
    };
    assert_eq!(id, 3);
    assert!(problem.contains("does not chain"), "{problem}");
    world.cleanup().await;
}
