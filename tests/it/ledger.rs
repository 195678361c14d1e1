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
                    let claimed = replay::store::ledger::claim_due(
                        &mut pool.acquire().await.unwrap(),
                        &format!("w{w}"),
                        50,
                        Duration::from_secs(60),
                    )
                    .await
                    .unwrap();
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
    assert!(replay::store::ledger::claim_due(&mut pool.acquire().await.unwrap(), "late", 50, Duration::from_secs(60))
        .await
        .unwrap()
        .is_empty());
}

async fn seed(pool: &PgPool) {
    sqlx::query(
        "INSERT INTO processed_events (event_id, event_type, payload, occurred_at, status, processed_at, error_message) VALUES
         ('e1', 'contribution.submitted', '{\"contribution_id\": \"c-1\", \"amount\": 100}', '2026-01-10T10:00:00Z', 'processed', '2026-01-10T10:00:01Z', NULL),
         ('e2', 'contribution.submitted', '{\"contribution_id\": \"c-2\", \"amount\": \"100\"}', '2026-01-31T23:59:00Z', 'error', '2026-02-01T00:00:01Z', 'boom'),
         ('e3', 'contribution.approved', '{\"contribution_id\": \"c-1\"}', '2026-02-01T00:00:00Z', 'processed', '2026-02-01T00:00:02Z', NULL),
         ('e4', 'period.opened', '{\"period_id\": \"p-1\"}', '2025-12-31T00:00:00Z', 'pending', NULL, NULL)",
    )
    .execute(pool)
    .await
    .unwrap();
}

async fn ids(pool: &PgPool, selector: &Selector) -> Vec<String> {
    replay::store::ledger::select(pool, selector, replay::store::ledger::Order::EventTime)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event_id)
        .collect()
}

use replay::replay::selector::{parse_time, Bound, PayloadField, Selector, TimeRange};

#[sqlx::test]
async fn selectors_pick_exactly_the_rows_the_runbook_queries_would(pool: PgPool) {
    seed(&pool).await;
    assert_eq!(ids(&pool, &Selector::default()).await, ["e4", "e1", "e2", "e3"], "event-time order");
    let january = TimeRange {
        from: Some(parse_time("--from", "2026-01-01", Bound::From).unwrap()),
        to: Some(parse_time("--to", "2026-01-31", Bound::To).unwrap()),
    };
    let by_type_and_day =
        Selector { event_types: vec!["contribution.submitted".into()], occurred: january, ..Selector::default() };
    assert_eq!(ids(&pool, &by_type_and_day).await, ["e1", "e2"], "a plain --to date includes that whole day");
    let failed = Selector { statuses: vec![replay::store::ledger::Status::Error], ..Selector::default() };
    assert_eq!(ids(&pool, &failed).await, ["e2"]);
    let processed_in_january = Selector { processed: january, ..Selector::default() };
    assert_eq!(ids(&pool, &processed_in_january).await, ["e1"]);
    let one_contribution =
        Selector { payload: vec![PayloadField::parse("contribution_id=c-1").unwrap()], ..Selector::default() };
    assert_eq!(ids(&pool, &one_contribution).await, ["e1", "e3"]);
    let amount = Selector { payload: vec![PayloadField::parse("amount=100").unwrap()], ..Selector::default() };
    assert_eq!(ids(&pool, &amount).await, ["e1", "e2"], "numbers match typed and string payload values");
    let single = Selector { event_ids: vec!["e3".into()], ..Selector::default() };
    assert_eq!(ids(&pool, &single).await, ["e3"]);
    let limited = Selector { limit: Some(2), ..Selector::default() };
    assert_eq!(ids(&pool, &limited).await, ["e4", "e1"]);
}

#[sqlx::test]
async fn hostile_selector_values_select_nothing_and_harm_nothing(pool: PgPool) {
    seed(&pool).await;
    let hostile = "x'); DROP TABLE processed_events; --";
    for selector in [
        Selector { event_types: vec![hostile.into()], ..Selector::default() },
        Selector { event_ids: vec![hostile.into()], ..Selector::default() },
        Selector { payload: vec![PayloadField { key: hostile.into(), value: hostile.into() }], ..Selector::default() },
    ] {
        assert!(ids(&pool, &selector).await.is_empty());
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_events").fetch_one(&pool).await.unwrap();
    assert_eq!(rows, 4);
}
