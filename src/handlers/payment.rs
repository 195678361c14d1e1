//! Payments: `payment.initiated` calls the payment provider (an effect outside
//! the database, stood for by `provider_calls`), `payment.completed` settles
//! it and marks its allocation paid. All SQL on `payments` and
//! `provider_calls` lives here. In a rehearsal (`Registry::sandboxed`) the
//! provider is not called: the call it would make is recorded instead.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{each, Applied, Effect, EffectLog, Handler, HandlerError, OneByOne};
use crate::wire::envelope::Event;

pub(super) fn handlers() -> Vec<Arc<dyn Handler>> {
    vec![each(Initiated { provider: Provider::Live }), each(Completed)]
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

/// The payment provider as `payment.initiated` reaches it: for real (a
/// `provider_calls` row stands for the call), or, in a rehearsal, not at
/// all: the call it would make is recorded in an [`EffectLog`].
#[derive(Clone)]
enum Provider {
    Live,
    Sandboxed(EffectLog),
}

impl Provider {
    /// Calls the provider for a payment, once per payment id (the
    /// idempotency key), or once per forcing plan for a forced replay.
    async fn call(
        &self,
        conn: &mut PgConnection,
        event: &Event,
        payment_id: Uuid,
        amount: &str,
        forced_by: Option<Uuid>,
    ) -> Result<(), sqlx::Error> {
        match self {
            Self::Live => {
                sqlx::query(
                    "INSERT INTO provider_calls (payment_id, amount, forced_by_plan)
                     VALUES ($1, $2::numeric, $3)
                     ON CONFLICT DO NOTHING",
                )
                .bind(payment_id)
                .bind(amount)
                .bind(forced_by)
                .execute(&mut *conn)
                .await?;
            }
            Self::Sandboxed(effects) => {
                let called: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM provider_calls
                                     WHERE payment_id = $1 AND forced_by_plan IS NOT DISTINCT FROM $2)",
                )
                .bind(payment_id)
                .bind(forced_by)
                .fetch_one(&mut *conn)
                .await?;
                if !called {
                    let forced = forced_by.map(|plan| format!(" (forced by plan {plan})")).unwrap_or_default();
                    effects.record(
                        event,
                        format!("would call the payment provider for payment {payment_id}, amount {amount}{forced}"),
                    );
                }
            }
        }
        Ok(())
    }
}

struct Initiated {
    provider: Provider,
}

#[async_trait]
impl OneByOne for Initiated {
    type Payload = InitiatedPayload;

    fn event_type(&self) -> &'static str {
        "payment.initiated"
    }

    fn effect(&self) -> Effect {
        Effect::External
    }

    fn sandboxed(&self, effects: &EffectLog) -> Option<Arc<dyn Handler>> {
        Some(each(Initiated { provider: Provider::Sandboxed(effects.clone()) }))
    }

    async fn apply_one(&self, conn: &mut PgConnection, event: &Event, p: Self::Payload) -> Applied {
        if !p.amount.as_f64().is_some_and(|a| a > 0.0) {
            return Ok(Err(HandlerError::Invalid(format!("amount {} is not a positive number", p.amount))));
        }
        if let Some(plan) = event.forced_by {
            // A forced replay skips the guard below on purpose: the provider
            // is called again for a payment that exists (once per forced plan).
            let amount: Option<String> = sqlx::query_scalar("SELECT amount::text FROM payments WHERE id = $1")
                .bind(p.payment_id)
                .fetch_optional(&mut *conn)
                .await?;
            if let Some(amount) = amount {
                self.provider.call(conn, event, p.payment_id, &amount, Some(plan)).await?;
                return Ok(Ok(()));
            }
        }
        // The provider is called once per payment id: the payment id is the
        // idempotency key, so a replay records no second call.
        let created: Option<String> = sqlx::query_scalar(
            "INSERT INTO payments (id, allocation_id, amount, status, initiated_at)
             SELECT $1, $2, $3::text::numeric, 'initiated', $4
              WHERE EXISTS (SELECT 1 FROM allocations WHERE id = $2)
             ON CONFLICT (id) DO NOTHING
             RETURNING amount::text",
        )
        .bind(p.payment_id)
        .bind(p.allocation_id)
        .bind(p.amount.to_string())
        .bind(event.occurred_at)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(amount) = created {
            self.provider.call(conn, event, p.payment_id, &amount, None).await?;
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
