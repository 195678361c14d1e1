//! Allocations: one per member and period, the sum of the member's approved
//! contributions. `allocation.calculate` recomputes one member,
//! `allocation.calculated` is a notification, `allocation.distributed` marks
//! an allocation handed out. All SQL on `allocations` lives here.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{each, Applied, Handler, HandlerError, OneByOne};
use crate::wire::envelope::Event;

pub(super) fn handlers() -> Vec<Arc<dyn Handler>> {
    vec![each(Calculate), each(Calculated), each(Distributed)]
}

/// Recomputes the allocations of a period (or of one member in it). Rows still
/// `calculated` or `pending` are replaced; distributed or paid ones are never
/// touched. Allocation ids derive from member and period, so a recomputation
/// keeps them.
pub(super) async fn recompute(
    conn: &mut PgConnection,
    period_id: Uuid,
    member_id: Option<Uuid>,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH sums AS (
             SELECT member_id,
                    COALESCE(SUM(amount) FILTER (WHERE status = 'approved'), 0) AS amount
               FROM contributions
              WHERE period_id = $1 AND ($2::uuid IS NULL OR member_id = $2)
              GROUP BY member_id
         ), upserted AS (
             INSERT INTO allocations (id, member_id, period_id, amount, status, calculated_at)
             SELECT md5(member_id::text || ':' || $1::text)::uuid, member_id, $1, amount, 'calculated', $3
               FROM sums
             ON CONFLICT (member_id, period_id) DO UPDATE
                SET amount = EXCLUDED.amount, status = 'calculated', calculated_at = EXCLUDED.calculated_at
              WHERE allocations.status IN ('calculated', 'pending')
             RETURNING member_id
         )
         DELETE FROM allocations a
          WHERE a.period_id = $1 AND ($2::uuid IS NULL OR a.member_id = $2)
            AND a.status IN ('calculated', 'pending')
            AND NOT EXISTS (SELECT 1 FROM sums s WHERE s.member_id = a.member_id)",
    )
    .bind(period_id)
    .bind(member_id)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Deserialize)]
struct CalculatePayload {
    member_id: Uuid,
    period_id: Uuid,
}

#[derive(Deserialize)]
struct DistributedPayload {
    allocation_id: Uuid,
}

struct Calculate;

#[async_trait]
impl OneByOne for Calculate {
    type Payload = CalculatePayload;

    fn event_type(&self) -> &'static str {
        "allocation.calculate"
    }

    fn sequence_key(&self, event: &Event) -> Option<String> {
        super::payload_period_key(event)
    }

    async fn apply_one(&self, conn: &mut PgConnection, event: &Event, p: Self::Payload) -> Applied {
        let period_exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM allocation_periods WHERE id = $1)")
            .bind(p.period_id)
            .fetch_one(&mut *conn)
            .await?;
        if !period_exists {
            return Ok(Err(HandlerError::NotReady(format!(
                "period {} does not exist yet (no period.opened processed)",
                p.period_id
            ))));
        }
        recompute(conn, p.period_id, Some(p.member_id), event.occurred_at).await?;
        Ok(Ok(()))
    }
}

/// A notification that allocations were computed; the close already wrote them.
struct Calculated;

#[async_trait]
impl OneByOne for Calculated {
    type Payload = serde::de::IgnoredAny;

    fn event_type(&self) -> &'static str {
        "allocation.calculated"
    }

    async fn apply_one(&self, _conn: &mut PgConnection, _event: &Event, _payload: Self::Payload) -> Applied {
        Ok(Ok(()))
    }
}

struct Distributed;

#[async_trait]
impl OneByOne for Distributed {
    type Payload = DistributedPayload;

    fn event_type(&self) -> &'static str {
        "allocation.distributed"
    }

    async fn apply_one(&self, conn: &mut PgConnection, event: &Event, p: Self::Payload) -> Applied {
        let status: Option<String> = sqlx::query_scalar(
            "UPDATE allocations
                SET status = CASE WHEN status = 'paid' THEN 'paid' ELSE 'distributed' END,
                    distributed_at = COALESCE(distributed_at, $2)
              WHERE id = $1 AND status IN ('calculated', 'distributed', 'paid')
              RETURNING status",
        )
        .bind(p.allocation_id)
        .bind(event.occurred_at)
        .fetch_optional(&mut *conn)
        .await?;
        if status.is_some() {
            return Ok(Ok(()));
        }
        let current: Option<String> = sqlx::query_scalar("SELECT status FROM allocations WHERE id = $1")
            .bind(p.allocation_id)
            .fetch_optional(&mut *conn)
            .await?;
        Ok(Err(HandlerError::NotReady(match current {
            Some(status) => format!("allocation {} is {status}, waiting for its recomputation", p.allocation_id),
            None => format!("allocation {} does not exist yet (its period is not closed)", p.allocation_id),
        })))
    }
}

/// An allocation as the replay workflows read it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct AllocationState {
    pub member_id: Uuid,
    pub status: String,
    pub amount: String,
    pub calculated_at: DateTime<Utc>,
}

/// The allocations of a period (or of one member in it), by member.
pub(crate) async fn of(
    conn: &mut PgConnection,
    period_id: Uuid,
    member_id: Option<Uuid>,
) -> Result<Vec<AllocationState>, sqlx::Error> {
    sqlx::query_as(
        "SELECT member_id, status, amount::text AS amount, calculated_at FROM allocations
          WHERE period_id = $1 AND ($2::uuid IS NULL OR member_id = $2)
          ORDER BY member_id",
    )
    .bind(period_id)
    .bind(member_id)
    .fetch_all(conn)
    .await
}

/// Marks calculated allocations `pending`, waiting for a replayed
/// computation; distributed and paid ones are never touched.
pub(crate) async fn mark_pending(
    conn: &mut PgConnection,
    period_id: Uuid,
    member_id: Option<Uuid>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE allocations SET status = 'pending'
          WHERE period_id = $1 AND ($2::uuid IS NULL OR member_id = $2) AND status = 'calculated'",
    )
    .bind(period_id)
    .bind(member_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
