//! The outbox, `replay_control.outbox`: events `replay publish` or
//! `replay apply` could not get confirmed (the broker was down or refused),
//! kept durably until a worker's relay publishes them; a replay's events
//! keep their plan, so they are relayed with its `x-replay-plan` header. An event relayed twice (a crash between the confirm
//! and the delete) is recognised by the ledger. All SQL on that table lives here.

use super::{failed, StoreError};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::replay::plan::id::PlanId;
use crate::wire::envelope::Event;

/// Keeps events, once each: an event id already kept is left as it is,
/// except that a replay's label is added to it (so it is relayed as the
/// replay's and an emergency stop can drop it). Returns how many rows were
/// added or labelled.
pub async fn keep(pool: &PgPool, events: &[Event], reason: &str) -> Result<u64, StoreError> {
    // The label column is text (migration 0008): the plan id as its text.
    let plans: Vec<Option<String>> = events.iter().map(|e| e.replay_plan.map(|p| p.to_string())).collect();
    let done = crate::store::bind_event_columns(
        sqlx::query(
            "INSERT INTO replay_control.outbox
                    (event_id, event_type, payload, occurred_at, replay_plan, reason, partition_key)
             SELECT e.event_id, e.event_type, e.payload::jsonb, e.occurred_at, e.replay_plan, $6, e.partition_key
               FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $7::text[])
                    AS e(event_id, event_type, payload, occurred_at, replay_plan, partition_key)
             ON CONFLICT (event_id) DO UPDATE SET replay_plan = EXCLUDED.replay_plan
              WHERE outbox.replay_plan IS NULL AND EXCLUDED.replay_plan IS NOT NULL",
        ),
        events,
    )
    .bind(&plans)
    .bind(reason)
    .bind(events.iter().map(|e| e.partition_key.as_deref()).collect::<Vec<_>>())
    .execute(pool)
    .await
    .map_err(failed("keep events in the outbox"))?;
    Ok(done.rows_affected())
}

#[derive(sqlx::FromRow)]
struct KeptRow {
    id: i64,
    event_id: String,
    event_type: String,
    payload: serde_json::Value,
    occurred_at: DateTime<Utc>,
    replay_plan: Option<String>,
    partition_key: Option<String>,
}

/// An event kept in the outbox, with its row id (to forget it once relayed).
#[derive(Debug, Clone)]
pub struct Kept {
    pub id: i64,
    pub event: Event,
}

/// Takes up to `limit` kept events, oldest first, locked for the caller's
/// transaction (another relay skips them).
pub async fn take(conn: &mut PgConnection, limit: i64) -> Result<Vec<Kept>, StoreError> {
    let rows: Vec<KeptRow> = sqlx::query_as(
        "SELECT id, event_id, event_type, payload, occurred_at, replay_plan, partition_key FROM replay_control.outbox
          ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(failed("take events from the outbox"))?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let event = Event::new(row.event_id, row.event_type, row.occurred_at, row.payload).ok()?;
            // Only `keep` writes labels, each a plan id's text; one that is
            // not would be relayed as a plain event.
            let replay_plan = row.replay_plan.and_then(|label| label.parse::<PlanId>().ok());
            Some(Kept { id: row.id, event: Event { replay_plan, partition_key: row.partition_key, ..event } })
        })
        .collect())
}

/// Forgets relayed events, inside the caller's transaction.
pub async fn forget(conn: &mut PgConnection, ids: &[i64]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM replay_control.outbox WHERE id = ANY($1)")
        .bind(ids)
        .execute(conn)
        .await
        .map_err(failed("forget relayed events"))?;
    Ok(())
}

/// Drops a replay's events (`plan`, or every replay's when `None`) for an
/// emergency stop: they must never reach the workers after the restore.
pub async fn drop_replay(pool: &PgPool, plan: Option<PlanId>) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM replay_control.outbox WHERE replay_plan IS NOT NULL AND ($1::text IS NULL OR replay_plan = $1)",
    )
    .bind(plan.map(|p| p.to_string()))
    .execute(pool)
    .await
    .map_err(failed("drop a replay's outbox events"))?;
    Ok(done.rows_affected())
}

/// How many of a replay plan's events wait in the outbox.
pub async fn count_for_plan(pool: &PgPool, plan: PlanId) -> Result<i64, StoreError> {
    sqlx::query_scalar("SELECT count(*) FROM replay_control.outbox WHERE replay_plan = $1")
        .bind(plan.to_string())
        .fetch_one(pool)
        .await
        .map_err(failed("count a plan's outbox events"))
}

/// What waits in the outbox, for health and metrics: how many events, and
/// how long the oldest has waited (`None` when it is empty). A backlog whose
/// oldest keeps ageing is a relay that cannot publish; one that stays young
/// is draining.
#[derive(Debug, Clone, Copy, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct Backlog {
    pub events: i64,
    pub oldest_seconds: Option<f64>,
}

pub async fn backlog(pool: &PgPool) -> Result<Backlog, StoreError> {
    sqlx::query_as(
        "SELECT count(*) AS events, extract(epoch FROM now() - min(enqueued_at))::float8 AS oldest_seconds
           FROM replay_control.outbox",
    )
    .fetch_one(pool)
    .await
    .map_err(failed("read the outbox backlog"))
}
