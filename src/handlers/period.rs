//! Allocation periods: `period.opened`, and `period.close` / `period.closed`,
//! which close a period and compute its allocations.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::NaiveDate;
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{allocation, each, payload_period_key, Applied, Handler, HandlerError, OneByOne};
use crate::wire::envelope::Event;

pub(super) fn handlers() -> Vec<Arc<dyn Handler>> {
    vec![each(Opened), each(Close { event_type: "period.close" }), each(Close { event_type: "period.closed" })]
}

#[derive(Deserialize)]
struct OpenedPayload {
    period_id: Uuid,
    start_date: NaiveDate,
    end_date: NaiveDate,
}

#[derive(Deserialize)]
struct ClosePayload {
    period_id: Uuid,
}

struct Opened;

#[async_trait]
impl OneByOne for Opened {
    type Payload = OpenedPayload;

    fn event_type(&self) -> &'static str {
        "period.opened"
    }

    fn sequence_key(&self, event: &Event) -> Option<String> {
        payload_period_key(event)
    }

    async fn apply_one(&self, conn: &mut PgConnection, event: &Event, p: Self::Payload) -> Applied {
        if p.end_date < p.start_date {
            return Ok(Err(HandlerError::Invalid(format!(
                "period {} ends ({}) before it starts ({})",
                p.period_id, p.end_date, p.start_date
            ))));
        }
        sqlx::query(
            "INSERT INTO allocation_periods (id, start_date, end_date, status, opened_at)
             VALUES ($1, $2, $3, 'open', $4)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(p.period_id)
        .bind(p.start_date)
        .bind(p.end_date)
        .bind(event.occurred_at)
        .execute(&mut *conn)
        .await?;
        Ok(Ok(()))
    }
}

/// Closing is the same work whether it is asked for (`period.close`) or
/// announced (`period.closed`): close, then compute allocations.
struct Close {
    event_type: &'static str,
}

#[async_trait]
impl OneByOne for Close {
    type Payload = ClosePayload;

    fn event_type(&self) -> &'static str {
        self.event_type
    }

    /// A close waits for every earlier event of its period.
    fn sequence_key(&self, event: &Event) -> Option<String> {
        payload_period_key(event)
    }

    async fn apply_one(&self, conn: &mut PgConnection, event: &Event, p: Self::Payload) -> Applied {
        // An already closed period keeps its first closing time, so a replayed
        // close leaves the row as it was.
        let closed = sqlx::query(
            "UPDATE allocation_periods
                SET status = 'closed', closed_at = COALESCE(closed_at, $2)
              WHERE id = $1",
        )
        .bind(p.period_id)
        .bind(event.occurred_at)
        .execute(&mut *conn)
        .await?;
        if closed.rows_affected() == 0 {
            return Ok(Err(HandlerError::NotReady(format!(
                "period {} does not exist yet (no period.opened processed)",
                p.period_id
            ))));
        }
        allocation::recompute(conn, p.period_id, None, event.occurred_at).await?;
        Ok(Ok(()))
    }
}

/// A period as the replay workflows read it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct PeriodState {
    pub id: Uuid,
    pub status: String,
    pub end_date: NaiveDate,
    pub closed_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A period by id.
pub(crate) async fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<PeriodState>, sqlx::Error> {
    sqlx::query_as("SELECT id, status, end_date, closed_at FROM allocation_periods WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The closed period that ended last, as the runbook finds it.
pub(crate) async fn latest_closed(conn: &mut PgConnection) -> Result<Option<PeriodState>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, status, end_date, closed_at FROM allocation_periods
          WHERE status = 'closed' ORDER BY end_date DESC, id LIMIT 1",
    )
    .fetch_optional(conn)
    .await
}

/// Opens a closed period again, for a replayed close to recompute it.
pub(crate) async fn reopen(conn: &mut PgConnection, id: Uuid) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE allocation_periods SET status = 'open', closed_at = NULL WHERE id = $1 AND status = 'closed'",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
