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
                        0,
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
    assert!(replay::store::ledger::claim_due(
        &mut pool.acquire().await.unwrap(),
        "late",
        0,
        50,
        Duration::from_secs(60)
    )
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

/// A ledger the planner takes seriously: 200,000 rows over a year, nearly
/// all processed contributions, with the rare rows operators look for (a
/// few hundred failed, skipped and pending rows, one period event in a
/// thousand).
async fn seed_large(pool: &PgPool) {
    sqlx::query(
        "INSERT INTO processed_events
                (event_id, event_type, payload, occurred_at, received_at, status, processed_at, error_message)
         SELECT 'evt-' || n,
                CASE WHEN n % 1000 = 0 THEN 'period.opened' ELSE 'contribution.submitted' END,
                jsonb_build_object('contribution_id', 'c-' || n, 'member_id', 'm-' || (n % 500), 'amount', n % 90),
                t, t + interval '1 second',
                CASE WHEN n % 997 = 0 THEN 'error' WHEN n % 991 = 0 THEN 'skipped'
                     WHEN n % 983 = 0 THEN 'pending' ELSE 'processed' END,
                CASE WHEN n % 983 = 0 THEN NULL ELSE t + interval '2 seconds' END,
                CASE WHEN n % 997 = 0 THEN 'boom' END
           FROM generate_series(1, 200000) n,
                LATERAL (SELECT now() - interval '365 days' + n * interval '157 seconds' AS t) times",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE processed_events").execute(pool).await.unwrap();
}

/// The plan nodes that read `processed_events` by a sequential scan.
fn seq_scans(plan: &serde_json::Value) -> usize {
    match plan {
        serde_json::Value::Object(node) => {
            let here = node.get("Node Type").and_then(|t| t.as_str()) == Some("Seq Scan")
                && node.get("Relation Name").and_then(|t| t.as_str()) == Some("processed_events");
            usize::from(here) + node.values().map(seq_scans).sum::<usize>()
        }
        serde_json::Value::Array(items) => items.iter().map(seq_scans).sum(),
        _ => 0,
    }
}

#[sqlx::test]
async fn every_selector_and_runbook_query_is_served_by_an_index(pool: PgPool) {
    use replay::store::ledger::{self, Order, Reading, Status};
    seed_large(&pool).await;
    let now = chrono::Utc::now();
    let day_ago = TimeRange { from: Some(now - chrono::Duration::days(1)), to: None };
    let one_day =
        TimeRange { from: Some(now - chrono::Duration::days(100)), to: Some(now - chrono::Duration::days(99)) };
    let type_ = |t: &str| vec![t.to_string()];
    let selectors = [
        ("the whole ledger", Selector::default()),
        ("one event", Selector { event_ids: vec!["evt-4242".into()], ..Selector::default() }),
        ("a rare type", Selector { event_types: type_("period.opened"), ..Selector::default() }),
        (
            "a type over a day",
            Selector { event_types: type_("contribution.submitted"), occurred: one_day, ..Selector::default() },
        ),
        (
            "two types",
            Selector { event_types: vec!["period.opened".into(), "period.closed".into()], ..Selector::default() },
        ),
        ("a day of event time", Selector { occurred: one_day, ..Selector::default() }),
        ("a day of processing time", Selector { processed: one_day, ..Selector::default() }),
        ("failed events", Selector { statuses: vec![Status::Error], ..Selector::default() }),
        (
            "failed events in the last 24 h",
            Selector { statuses: vec![Status::Error], processed: day_ago, ..Selector::default() },
        ),
        ("skipped events", Selector { statuses: vec![Status::Skipped], ..Selector::default() }),
        ("pending events", Selector { statuses: vec![Status::Pending], ..Selector::default() }),
        (
            "events of one contribution",
            Selector { payload: vec![PayloadField::parse("contribution_id=c-4242").unwrap()], ..Selector::default() },
        ),
        (
            "a number in the payload",
            Selector {
                payload: vec![PayloadField::parse("amount=7").unwrap()],
                event_types: type_("period.opened"),
                ..Selector::default()
            },
        ),
        (
            "recent events",
            Selector { received_from: Some(now - chrono::Duration::hours(1)), limit: Some(50), ..Selector::default() },
        ),
    ];
    let mut scanned = Vec::new();
    for (name, selector) in &selectors {
        let readings = [
            (Order::EventTime, Reading::Plan),
            (Order::NewestFirst, Reading::Rows),
            (Order::LatestFirst { after: None }, Reading::Rows),
            (Order::LatestFirst { after: Some(150_000) }, Reading::Rows),
        ];
        for (order, reading) in readings {
            // Operators read pages; a plan reads every row it selects.
            let selector = match reading {
                Reading::Rows => Selector { limit: selector.limit.or(Some(50)), ..selector.clone() },
                Reading::Plan => selector.clone(),
            };
            let plan = ledger::explain_selection(&pool, &selector, order, reading).await.unwrap();
            if seq_scans(&plan) > 0 {
                scanned.push(format!("{name} ({order:?}): {plan}"));
            }
        }
    }
    let since = now - chrono::Duration::days(1);
    let explain = |sql: &str| format!("EXPLAIN (FORMAT JSON) {sql}");
    let runbook = [
        (
            "unresolved errors",
            sqlx::query_scalar(sqlx::AssertSqlSafe(explain(ledger::UNRESOLVED_ERRORS_SQL))).bind(50_i64),
        ),
        (
            "error report (last 24 h)",
            sqlx::query_scalar(sqlx::AssertSqlSafe(explain(ledger::ERROR_REPORT_SQL))).bind(since),
        ),
        (
            "per minute (last 24 h)",
            sqlx::query_scalar(sqlx::AssertSqlSafe(explain(ledger::PER_MINUTE_SQL))).bind(since),
        ),
        ("activity", sqlx::query_scalar(sqlx::AssertSqlSafe(explain(ledger::ACTIVITY_SQL)))),
    ];
    for (name, query) in runbook {
        let plan: serde_json::Value = query.fetch_one(&pool).await.unwrap();
        if seq_scans(&plan) > 0 {
            scanned.push(format!("{name}: {plan}"));
        }
    }
    let prune: serde_json::Value = sqlx::query_scalar(sqlx::AssertSqlSafe(explain(ledger::PRUNE_BATCH_SQL)))
        .bind(now - chrono::Duration::days(300))
        .bind(1000_i64)
        .fetch_one(&pool)
        .await
        .unwrap();
    if seq_scans(&prune) > 0 {
        scanned.push(format!("prune batch: {prune}"));
    }
    assert!(scanned.is_empty(), "sequential scans of processed_events:\n{}", scanned.join("\n"));
}
