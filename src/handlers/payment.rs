//! Payments: `payment.initiated` calls the payment provider (an effect outside
//! the database, stood for by `provider_calls`), `payment.completed` settles
//! it and marks its allocation paid. All SQL on `payments` and
//! `provider_calls` lives here.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{each, Applied, Effect, Handler, HandlerError, OneByOne};
use crate::wire::envelope::Event;

pub(super) fn handlers() -> Vec<Arc<dyn Handler>> {
    vec![each(Initiated), each(Completed)]
}

#[derive(Deserialize)]
struct InitiatedPayload {
    payment_id: Uuid,
    allocation_id: Uuid,
    amount: serde_json::Number,
}

#[derive(Deserialize)]
struct CompletedPayload {
    payment_id: Uuid,
}

struct Initiated;

#[async_trait]
impl OneByOne for Initiated {
    type Payload = InitiatedPayload;

    fn event_type(&self) -> &'static str {
        "payment.initiated"
    }

    fn effect(&self) -> Effect {
        Effect::External
    }

    async fn apply_one(&self, conn: &mut PgConnection, event: &Event, p: Self::Payload) -> Applied {
        if !p.amount.as_f64().is_some_and(|a| a > 0.0) {
            return Ok(Err(HandlerError::Invalid(format!("amount {} is not a positive number", p.amount))));
        }
        if let Some(plan) = event.forced_by {
            // A forced replay skips the guard below on purpose: the provider
            // is called again for a payment that exists (once per forced plan).
            let called: Option<Uuid> = sqlx::query_scalar(
                "INSERT INTO provider_calls (payment_id, amount, forced_by_plan)
                 SELECT id, amount, $2 FROM payments WHERE id = $1
                 ON CONFLICT (payment_id, forced_by_plan) WHERE forced_by_plan IS NOT NULL DO NOTHING
                 RETURNING payment_id",
            )
            .bind(p.payment_id)
            .bind(plan)
            .fetch_optional(&mut *conn)
            .await?;
            if called.is_some() {
                return Ok(Ok(()));
            }
        }
        // The provider is called once per payment id: the payment id is the
        // idempotency key, so a replay records no second call.
        let created: Option<Uuid> = sqlx::query_scalar(
            "WITH created AS (
                 INSERT INTO payments (id, allocation_id, amount, status, initiated_at)
                 SELECT $1, $2, $3::text::numeric, 'initiated', $4
                  WHERE EXISTS (SELECT 1 FROM allocations WHERE id = $2)
                 ON CONFLICT (id) DO NOTHING
                 RETURNING id, amount
             )
             INSERT INTO provider_calls (payment_id, amount)
             SELECT id, amount FROM created
             ON CONFLICT (payment_id) WHERE forced_by_plan IS NULL DO NOTHING
             RETURNING payment_id",
        )
        .bind(p.payment_id)
        .bind(p.allocation_id)
        .bind(p.amount.to_string())
        .bind(event.occurred_at)
        .fetch_optional(&mut *conn)
        .await?;
        if created.is_some() {
            return Ok(Ok(()));
        }
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM payments WHERE id = $1)")
            .bind(p.payment_id)
            .fetch_one(&mut *conn)
            .await?;
        Ok(if exists {
            Ok(())
        } else {
            Err(HandlerError::NotReady(format!("allocation {} does not exist yet", p.allocation_id)))
        })
    }
}

struct Completed;

#[async_trait]
impl OneByOne for Completed {
    type Payload = CompletedPayload;

    fn event_type(&self) -> &'static str {
        "payment.completed"
    }

    async fn apply_one(&self, conn: &mut PgConnection, event: &Event, p: Self::Payload) -> Applied {
        let allocation: Option<Uuid> = sqlx::query_scalar(
            "UPDATE payments SET status = 'completed', completed_at = COALESCE(completed_at, $2)
              WHERE id = $1
              RETURNING allocation_id",
        )
        .bind(p.payment_id)
        .bind(event.occurred_at)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(allocation) = allocation else {
            return Ok(Err(HandlerError::NotReady(format!("payment {} has not been initiated yet", p.payment_id))));
        };
        sqlx::query("UPDATE allocations SET status = 'paid' WHERE id = $1 AND status <> 'paid'")
            .bind(allocation)
            .execute(&mut *conn)
            .await?;
        Ok(Ok(()))
    }
}
