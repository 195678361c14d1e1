//! The ledger's claim, as several workers race for the same pending rows.
#![allow(clippy::unwrap_used)] // a test that cannot read its own database should fail loudly

use std::collections::HashSet;
use std::time::Duration;

use sqlx::PgPool;

#[sqlx::test]
async fn concurrent_claims_never_take_a_row_twice(pool: PgPool) {
    sqlx::query(
        "INSERT INTO processed_events (event_id, event_type, payload, occurred_at, status)
         SELECT 'evt-' || n, 'period.opened', '{}', now(), 'pending' FROM generate_series(1, 2000) n",
    )
    .execute(&pool)
    .await
    .unwrap();

    let claimers: Vec<_> = (0..4)
        .map(|w| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let claimed =
                        replay::ledger::claim_due(&pool, &format!("w{w}"), 50, Duration::from_secs(60)).await.unwrap();
                    if claimed.is_empty() {
                        return mine;
                    }
                    mine.extend(claimed.into_iter().map(|c| c.id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 2000, "every pending row claimed");
    assert_eq!(distinct.len(), 2000, "no row claimed twice");
    let processing: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM processed_events WHERE status = 'processing' AND locked_by IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(processing, 2000);
    // A live lease is not claimable again.
    assert!(replay::ledger::claim_due(&pool, "late", 50, Duration::from_secs(60)).await.unwrap().is_empty());
}
