//! The ledger, `processed_events`: every event ever seen and what became of it.
//! All SQL on that table lives here, split by caller: `worker`, `replay`
//! (plans, apply and the emergency stop) and `operator`.
//!
//! Statuses: `pending` (waiting, or waiting for a retry at `next_attempt_at`),
//! `processing` (claimed by `locked_by` until its lease, `next_attempt_at`,
//! expires), `processed`, `error` (attempts exhausted or payload unusable: the
//! dead-letter state), `skipped` (no handler for its type).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Postgres, QueryBuilder};

use crate::replay::selector::Selector;
use crate::wire::envelope::{Event, Rejection};

/// A failed event's error with the ids and numbers in it blanked (`<id>`,
/// `<n>`): failures that differ only in the row they name are one group.
/// A macro, so the statements that use it (here, before the submodules,
/// so each sees it) are literals that embed it once each.
macro_rules! normalized_error {
    () => {
        "regexp_replace(regexp_replace(coalesce(error_message, ''), \
         '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<id>', 'gi'), '[0-9]+', '<n>', 'g')"
    };
}

mod operator;
mod replay;
pub mod status;
mod worker;

pub use operator::*;
pub use replay::*;
pub use status::Status;
pub use worker::*;

/// What a selection reads: a plan's columns (`for_each_selected`) or the
/// rows an operator is shown (`select`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    Plan,
    Rows,
}

impl Reading {
    fn columns(self) -> &'static str {
        match self {
            Self::Plan => "SELECT id, event_id, event_type, status, occurred_at, xmin::text FROM processed_events",
            Self::Rows => {
                "SELECT id, event_id, event_type, payload, occurred_at, status, retry_count, error_message, \
                 processed_at, updated_at FROM processed_events"
            }
        }
    }
}

/// `columns` (a SELECT ... FROM processed_events) restricted by a selector.
fn selection(columns: &str, selector: &Selector, order: Order) -> QueryBuilder<Postgres> {
    let mut query = QueryBuilder::<Postgres>::new(columns);
    query.push(" WHERE true");
    if !selector.event_ids.is_empty() {
        query.push(" AND event_id = ANY(").push_bind(&selector.event_ids).push(")");
    }
    match selector.event_types.as_slice() {
        [] => {}
        // One type as `=`, not `= ANY`: an index scan on an array match
        // returns rows out of index order (before Postgres 17), so the
        // console's latest-first page of one type would sort every row of it.
        [one] => {
            query.push(" AND event_type = ").push_bind(one);
        }
        many => {
            query.push(" AND event_type = ANY(").push_bind(many).push(")");
        }
    }
    for (column, range) in [("occurred_at", &selector.occurred), ("processed_at", &selector.processed)] {
        if let Some(from) = range.from {
            query.push(format_args!(" AND {column} >= ")).push_bind(from);
        }
        if let Some(to) = range.to {
            query.push(format_args!(" AND {column} < ")).push_bind(to);
        }
    }
    if !selector.statuses.is_empty() {
        let statuses: Vec<&str> = selector.statuses.iter().map(|s| s.as_str()).collect();
        query.push(" AND status = ANY(").push_bind(statuses).push(")");
    }
    if let Some(from) = selector.received_from {
        query.push(" AND received_at >= ").push_bind(from);
    }
    for field in &selector.payload {
        let mut alternatives = query.push(" AND (").separated(" OR ");
        for document in field.containments() {
            alternatives.push("payload @> ").push_bind_unseparated(document);
        }
        query.push(")");
    }
    match order {
        Order::EventTime => query.push(" ORDER BY occurred_at, id"),
        Order::NewestFirst => query.push(" ORDER BY id DESC"),
        Order::LatestFirst { after: None } => query.push(" ORDER BY occurred_at DESC, id DESC"),
        Order::LatestFirst { after: Some(id) } => query
            .push(" AND (occurred_at, id) < (SELECT occurred_at, id FROM processed_events WHERE id = ")
            .push_bind(id)
            .push(") ORDER BY occurred_at DESC, id DESC"),
    };
    if let Some(limit) = selector.limit {
        query.push(" LIMIT ").push_bind(limit);
    }
    query
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: i64,
    event_id: String,
    event_type: String,
    payload: Value,
    occurred_at: DateTime<Utc>,
    retry_count: i32,
    #[sqlx(default)]
    replay_forced_by: Option<uuid::Uuid>,
    #[sqlx(default)]
    partition_key: Option<String>,
}

impl ClaimedRow {
    /// A stored payload was storable once, so rebuilding the event cannot be
    /// rejected; if it ever is, the row is left for its lease to expire.
    fn into_claimed(self) -> Option<Claimed> {
        let event = Event::new(self.event_id, self.event_type, self.occurred_at, self.payload)
            .map_err(|e: Rejection| tracing::error!(row = self.id, error = %e, "stored payload cannot be rebuilt"))
            .ok()?;
        let event = Event { forced_by: self.replay_forced_by, partition_key: self.partition_key, ..event };
        Some(Claimed { id: self.id, event, retry_count: self.retry_count })
    }
}
