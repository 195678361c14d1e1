//! The effect probe: every handler wrapped so that each application of an
//! event appends one row to `effect_probe`, a table with no unique key, in
//! the handler's own transaction. The ledger's unique event id and the
//! handlers' own idempotency make a second application invisible in the
//! domain tables; here it is a second row. "Applied exactly once" in the
//! tests means one probe row per event id.

use std::sync::Arc;

use async_trait::async_trait;
use replay::handlers::{Effect, Handler, Keys, Outcomes, Registry};
use replay::wire::envelope::Event;
use sqlx::PgConnection;

/// The table the probe writes to, and an index (not unique: a second
/// application must land) for the checks; `World::new` runs these in each
/// test database.
#[allow(dead_code)] // used by the tests, not by the probed binary
pub const SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS effect_probe (
        event_id text NOT NULL,
        event_type text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )",
    "CREATE INDEX IF NOT EXISTS effect_probe_event_idx ON effect_probe (event_id)",
];

/// The reference handlers, each wrapped by the probe.
pub fn registry() -> Registry {
    Registry::reference().instrumented(|inner| Arc::new(Probe(inner)))
}

struct Probe(Arc<dyn Handler>);

#[async_trait]
impl Handler for Probe {
    fn event_type(&self) -> &'static str {
        self.0.event_type()
    }

    fn effect(&self) -> Effect {
        self.0.effect()
    }

    async fn apply(&self, conn: &mut PgConnection, events: &[&Event]) -> Result<Outcomes, sqlx::Error> {
        let outcomes = self.0.apply(&mut *conn, events).await?;
        let applied: Vec<&str> = events
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| outcome.is_ok())
            .map(|(e, _)| e.event_id.as_str())
            .collect();
        if !applied.is_empty() {
            sqlx::query("INSERT INTO effect_probe (event_id, event_type) SELECT unnest($1::text[]), $2")
                .bind(&applied)
                .bind(self.0.event_type())
                .execute(&mut *conn)
                .await?;
        }
        Ok(outcomes)
    }

    async fn sequence_keys(&self, conn: &mut PgConnection, events: &[&Event]) -> Result<Keys, sqlx::Error> {
        self.0.sequence_keys(conn, events).await
    }
}
