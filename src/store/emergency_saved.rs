//! `replay_control.emergency_saved_events` and
//! `replay_control.emergency_saved_dead_letters`: what an emergency stop
//! keeps across the restore. The stop saves here, batch by batch, what it
//! takes off the queue (and, before the restore, the events first seen since
//! the backup); after the restore it takes everything back out, in id order,
//! inside the transaction that puts it into the ledger and `dead_letters`.
//! All SQL on these two tables lives here.
//!
//! Invariant: both tables are in the control plane, outside every dump
//! (`store::backup`), so nothing saved here is erased by a restore; rows
//! leave only through [`take_events`] and [`take_dead_letters`], in the
//! caller's transaction. An event is saved once whatever the redeliveries
//! (`event_id` is unique); a message that is not an event has no identity,
//! so one redelivered after a stop died between its batch's commit and its
//! ack is saved twice.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use super::dead_letters::{self, DeadLetter};
use super::{failed, StoreError};
use crate::wire::envelope::Event;

/// Saves events; an event id already saved is left as it is. Returns how
/// many were added.
pub async fn save_events(conn: &mut PgConnection, events: &[Event], partition: i16) -> Result<u64, StoreError> {
    if events.is_empty() {
        return Ok(0);
    }
    let done = crate::store::bind_event_columns(
        sqlx::query(
            "INSERT INTO replay_control.emergency_saved_events
                    (event_id, event_type, payload, occurred_at, partition_key, partition_index)
             SELECT e.event_id, e.event_type, e.payload::jsonb, e.occurred_at, e.partition_key, $6
               FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[])
                 AS e(event_id, event_type, payload, occurred_at, partition_key)
             ON CONFLICT (event_id) DO NOTHING",
        ),
        events,
    )
    .bind(events.iter().map(|e| e.partition_key.as_deref()).collect::<Vec<_>>())
    .bind(partition)
    .execute(conn)
    .await
    .map_err(failed("save events across the restore"))?;
    Ok(done.rows_affected())
}

/// Saves, in one statement on the server, the events first seen at or after
/// `since`, except the ones replay plan `except_plan` reset or added: what a
/// restore of a backup taken at `since` would erase and an emergency stop
/// must keep. Nothing passes through the stop's memory, however many there
/// are. It reads the ledger and its history (their SQL is otherwise
/// `store::ledger`'s) because the save is this table's. Returns how many
/// were added.
pub async fn save_first_seen_since(
    pool: &PgPool,
    since: DateTime<Utc>,
    except_plan: Option<uuid::Uuid>,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "INSERT INTO replay_control.emergency_saved_events
                (event_id, event_type, payload, occurred_at, partition_key, partition_index)
         SELECT p.event_id, p.event_type, p.payload, p.occurred_at, p.partition_key, p.partition_index
           FROM processed_events p
          WHERE p.received_at >= $1
            AND NOT EXISTS (SELECT 1 FROM replay_history h WHERE h.ledger_id = p.id AND h.plan_id = $2)
          ORDER BY p.id
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(since)
    .bind(except_plan)
    .execute(pool)
    .await
    .map_err(failed("save the events first seen since the backup"))?;
    Ok(done.rows_affected())
}

/// Saves messages that are not events.
pub async fn save_dead_letters(conn: &mut PgConnection, letters: &[DeadLetter]) -> Result<(), StoreError> {
    if letters.is_empty() {
        return Ok(());
    }
    dead_letters::bind_columns(
        sqlx::query(
            "INSERT INTO replay_control.emergency_saved_dead_letters (exchange, routing_key, message_id, headers, body, reason)
             SELECT e, k, m, h::jsonb, b, r
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[]) AS t(e, k, m, h, b, r)",
        ),
        letters,
    )
    .execute(conn)
    .await
    .map_err(failed("save unreadable messages across the restore"))?;
    Ok(())
}

/// A chunk taken out of a save table: the rows, in save order, and the last
/// id, from which the next chunk is taken.
pub struct Chunk<T> {
    pub rows: Vec<T>,
    pub last_id: i64,
}

#[derive(sqlx::FromRow)]
struct SavedEventRow {
    id: i64,
    event_id: String,
    event_type: String,
    payload: Value,
    occurred_at: DateTime<Utc>,
    partition_key: Option<String>,
    partition_index: i16,
}

/// Deletes up to `limit` saved events with ids above `after` and returns
/// them in save order, inside the caller's transaction: they are gone only
/// if it commits. Walking up from the last id (rather than from the start
/// each time) keeps a long put-back from scanning the rows it already took.
pub async fn take_events(conn: &mut PgConnection, after: i64, limit: i64) -> Result<Chunk<(Event, i16)>, StoreError> {
    let mut rows: Vec<SavedEventRow> = sqlx::query_as(
        "DELETE FROM replay_control.emergency_saved_events
          WHERE id IN (SELECT id FROM replay_control.emergency_saved_events WHERE id > $1 ORDER BY id LIMIT $2)
      RETURNING id, event_id, event_type, payload, occurred_at, partition_key, partition_index",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(failed("take saved events"))?;
    // RETURNING promises no order; the ledger's id order is the apply order.
    rows.sort_unstable_by_key(|r| r.id);
    let last_id = rows.last().map_or(after, |r| r.id);
    // Built directly, not through `Event::new`: the payload was checked
    // storable when it was saved, and jsonb could not hold it otherwise.
    // Each event with the partition it is put back in.
    let events = rows
        .into_iter()
        .map(|r| {
            let partition = r.partition_index;
            let event = Event {
                payload_json: r.payload.to_string(),
                event_id: r.event_id,
                event_type: r.event_type,
                occurred_at: r.occurred_at,
                payload: r.payload,
                replay_plan: None,
                forced_by: None,
                partition_key: r.partition_key,
            };
            (event, partition)
        })
        .collect();
    Ok(Chunk { rows: events, last_id })
}

#[derive(sqlx::FromRow)]
struct SavedLetterRow {
    id: i64,
    exchange: String,
    routing_key: String,
    message_id: Option<String>,
    headers: Value,
    body: Vec<u8>,
    reason: String,
}

/// As [`take_events`], for the saved messages that are not events.
pub async fn take_dead_letters(
    conn: &mut PgConnection,
    after: i64,
    limit: i64,
) -> Result<Chunk<DeadLetter>, StoreError> {
    let mut rows: Vec<SavedLetterRow> = sqlx::query_as(
        "DELETE FROM replay_control.emergency_saved_dead_letters
          WHERE id IN (SELECT id FROM replay_control.emergency_saved_dead_letters WHERE id > $1 ORDER BY id LIMIT $2)
      RETURNING id, exchange, routing_key, message_id, headers, body, reason",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
    .map_err(failed("take saved unreadable messages"))?;
    rows.sort_unstable_by_key(|r| r.id);
    let last_id = rows.last().map_or(after, |r| r.id);
    let letters = rows
        .into_iter()
        .map(|r| DeadLetter {
            exchange: r.exchange,
            routing_key: r.routing_key,
            message_id: r.message_id,
            headers: r.headers,
            body: r.body,
            reason: r.reason,
        })
        .collect();
    Ok(Chunk { rows: letters, last_id })
}

/// What waits in the save tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waiting {
    pub events: i64,
    pub dead_letters: i64,
}

impl Waiting {
    pub fn is_empty(&self) -> bool {
        self.events == 0 && self.dead_letters == 0
    }
}

/// How many rows wait to be put back (an interrupted stop left them).
pub async fn waiting(pool: &PgPool) -> Result<Waiting, StoreError> {
    let (events, dead_letters): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM replay_control.emergency_saved_events),
                (SELECT count(*) FROM replay_control.emergency_saved_dead_letters)",
    )
    .fetch_one(pool)
    .await
    .map_err(failed("count what an emergency stop saved"))?;
    Ok(Waiting { events, dead_letters })
}
