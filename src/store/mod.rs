//! The store: the Postgres pool and migrations (`database`), the dumps and
//! restores of the domain (`backup`: the real pg_dump and pg_restore), and
//! one module per table (the ledger, the audit log, dead letters,
//! heartbeats, partition leaders, the outbox, replay runs, the pause,
//! topology migrations, what an emergency stop saves across a restore, the
//! console's tokens, the approvals of the two-person rule), throwaway databases on the
//! same server (`scratch`) and whole tables read generically to compare
//! two states (`snapshot`). All
//! SQL on a table lives in its module.

pub mod approvals;
pub mod audit;
pub mod backup;
pub mod database;
pub mod dead_letters;
pub mod emergency_saved;
pub mod heartbeats;
pub mod leaders;
pub mod ledger;
pub mod outbox;
pub mod partitioning;
pub mod pause;
pub mod runs;
pub mod scratch;
pub mod snapshot;
pub mod tokens;
pub mod topology_migrations;
pub mod unkeyed;

/// Binds events as the four column arrays an `unnest` insert of events
/// reads first, in this order: event id, type, payload (JSON text),
/// occurred at. The ledger, the outbox and the emergency stop's save table
/// all store an event with these columns.
pub(crate) fn bind_event_columns<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    events: &'q [crate::wire::envelope::Event],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(events.iter().map(|e| e.event_id.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.payload_json.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.occurred_at).collect::<Vec<_>>())
}

/// Unresolved DLQ entries of one kind and cause over a time window, as
/// `replay dlq report` shows them: failed events by type and error, dead
/// letters by routing key and reason.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct ReportGroup {
    /// The event type, or the dead letter's routing key.
    pub what: String,
    /// The error, or the broker's reason.
    pub why: String,
    pub count: i64,
    pub first_seen: Option<chrono::DateTime<chrono::Utc>>,
    pub last_seen: Option<chrono::DateTime<chrono::Utc>>,
}

/// A statement of the store failed: the operation it was part of, named for
/// the operator, and the driver's error. Every module of the store returns
/// this one type, so callers match one shape (connection lost or not).
#[derive(Debug, thiserror::Error)]
#[error("database query failed ({op}): {source}")]
pub struct StoreError {
    pub op: &'static str,
    #[source]
    pub source: sqlx::Error,
}

/// An error after which a session cannot be used again.
pub fn is_connection_loss(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        // The server ended the session (terminated, shut down, or an idle
        // transaction timed out): class 57P and 08.
        sqlx::Error::Database(db) => db.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
        _ => false,
    }
}

impl StoreError {
    /// Whether the statement failed because its connection went away.
    pub fn is_connection_loss(&self) -> bool {
        is_connection_loss(&self.source)
    }
}

/// Names a failed statement: `.map_err(failed("settle events"))`.
pub(crate) fn failed(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError { op, source }
}
