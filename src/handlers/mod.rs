//! Domain handlers: what each event type does to the cooperative's tables.
//!
//! One file per event family, each handler behind the [`Handler`] trait, all
//! listed in [`Registry::reference`]. Adding an event type is a handler in its
//! family's file (or a new file) and one line there.
//!
//! Architecture invariants:
//! - A handler runs inside the caller's transaction and never commits.
//! - Every handler is idempotent: applying an event that was applied before
//!   leaves the tables as they were. Timestamps come from the event, never `now()`.
//! - A handler that reports a per-event error has written nothing for that event.

pub(crate) mod allocation;
mod contribution;
mod payment;
pub(crate) mod period;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use sqlx::PgConnection;

use crate::wire::envelope::Event;

/// The cooperative's tables (`migrations/0002_cooperative.sql`), the
/// handlers' alone: what a rehearsal compares before and after.
pub const DOMAIN_TABLES: [&str; 6] =
    ["members", "allocation_periods", "contributions", "allocations", "payments", "provider_calls"];

/// Where a handler's effect lands, for the replay planner's warnings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Only rows in this database.
    Database,
    /// Something outside the database too (a provider call): replaying it is
    /// not undone by restoring a backup.
    External,
}

/// Why one event could not be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// The payload does not have the event type's shape; retrying cannot help.
    #[error("invalid payload: {0}")]
    Invalid(String),
    /// The event contradicts the domain's state (approving a rejected
    /// contribution); retrying cannot help.
    #[error("{0}")]
    Refused(String),
    /// Something this event depends on has not arrived yet (an approval
    /// before its submission); retried with backoff.
    #[error("{0}")]
    NotReady(String),
    /// The database failed while applying this event alone; retried.
    #[error("database error: {0}")]
    Database(String),
}

impl HandlerError {
    /// Whether retrying could ever succeed.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Invalid(_) | Self::Refused(_))
    }
}

/// One outcome per event handed to [`Handler::apply`], in the same order.
pub type Outcomes = Vec<Result<(), HandlerError>>;

/// One event's outcome; the outer `Err` means a statement failed and the
/// transaction needs rolling back.
type Applied = Result<Result<(), HandlerError>, sqlx::Error>;

#[async_trait]
pub trait Handler: Send + Sync {
    /// The event type (routing key) this handler applies.
    fn event_type(&self) -> &'static str;

    /// Whether the effect leaves the database.
    fn effect(&self) -> Effect {
        Effect::Database
    }

    /// Applies `events` (all of this handler's type, in order) inside the
    /// caller's transaction and returns one outcome per event. An `Err` means
    /// a statement failed and the transaction must be rolled back to the
    /// caller's savepoint; the caller then applies the events one at a time.
    async fn apply(&self, conn: &mut PgConnection, events: &[&Event]) -> Result<Outcomes, sqlx::Error>;

    /// Each event's sequence key, read inside the batch's transaction just
    /// before the events are applied (so earlier events of the batch are
    /// visible). Events that share a key are applied in ledger order, and one
    /// that cannot be applied holds the later ones behind it; `None` orders
    /// an event by its partition only. The default: no key.
    async fn sequence_keys(&self, _conn: &mut PgConnection, events: &[&Event]) -> Result<Keys, sqlx::Error> {
        Ok(vec![None; events.len()])
    }

    /// This handler for a rehearsal: one whose effect outside the database
    /// is recorded in `effects` instead of done. `None`: it has none to
    /// sandbox (a handler of [`Effect::External`] answering `None` cannot be
    /// rehearsed, see [`Registry::sandboxed`]).
    fn sandboxed(&self, _effects: &EffectLog) -> Option<Arc<dyn Handler>> {
        None
    }
}

/// What a sandboxed handler would have done outside the database, for one event.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WouldDo {
    pub event_id: String,
    pub event_type: String,
    pub effect: String,
}

/// Where a rehearsal's sandboxed handlers record the effects they would
/// have had; clones share one log. One entry per event: a batch redone
/// (with savepoints, or with an event held) records its events again,
/// replacing what they recorded before. The caller keeps only the entries
/// of events that ended processed, since a rolled-back attempt also records.
#[derive(Clone, Default)]
pub struct EffectLog(Arc<std::sync::Mutex<Vec<WouldDo>>>);

impl EffectLog {
    pub fn record(&self, event: &Event, effect: String) {
        let mut log = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = WouldDo { event_id: event.event_id.clone(), event_type: event.event_type.clone(), effect };
        match log.iter_mut().find(|e| e.event_id == entry.event_id) {
            Some(earlier) => *earlier = entry,
            None => log.push(entry),
        }
    }

    /// Everything recorded, in the order first recorded.
    pub fn entries(&self) -> Vec<WouldDo> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// A handler with effects outside the database that has no sandbox.
#[derive(Debug, thiserror::Error)]
#[error("the handler of {0} has effects outside the database and no sandbox for a rehearsal")]
pub struct Unsandboxed(pub &'static str);

/// One sequence key (or none) per event handed to [`Handler::sequence_keys`].
pub type Keys = Vec<Option<String>>;

/// The sequence key of everything that belongs to one allocation period:
/// its opening, its contributions and their decisions, its close and its
/// allocations. A close must not compute before an earlier approval.
pub(crate) fn period_key(period_id: uuid::Uuid) -> String {
    format!("period:{period_id}")
}

/// The payload field whose value is an event's partition key
/// (`x-partition-key`), by event type: what `replay publish` and a replay's
/// workflow events set, and what a foreign producer must set for the
/// cooperative's ordering to hold (README, "Partitions").
///
/// Everything of one period shares the period as its key, so a period's
/// close lands in the partition of every approval published before it and
/// is applied after them. A decision (`contribution.approved`/`rejected`)
/// names the period of the contribution it decides: its producer read that
/// contribution to decide it. A payment's two events share the payment; a
/// distribution, its allocation. Members have no key (their events travel
/// unkeyed, and what depends on a member waits for it).
pub fn partition_field(event_type: &str) -> Option<&'static str> {
    match event_type {
        "period.opened"
        | "period.close"
        | "period.closed"
        | "contribution.submitted"
        | "contribution.approved"
        | "contribution.rejected"
        | "allocation.calculate" => Some("period_id"),
        "payment.initiated" | "payment.completed" => Some("payment_id"),
        "allocation.distributed" => Some("allocation_id"),
        _ => None,
    }
}

/// An event's partition key under [`partition_field`]: `Ok(None)` for a type
/// without a key field, `Err(field)` when the type has one and the payload
/// lacks it (or holds no string or number there).
pub fn partition_key(event: &Event) -> Result<Option<String>, &'static str> {
    let Some(field) = partition_field(&event.event_type) else {
        return Ok(None);
    };
    match event.payload.get(field) {
        Some(serde_json::Value::String(text)) if !text.is_empty() => Ok(Some(text.clone())),
        Some(serde_json::Value::Number(number)) => Ok(Some(number.to_string())),
        _ => Err(field),
    }
}

/// The period key of an event whose payload names its `period_id`.
fn payload_period_key(event: &Event) -> Option<String> {
    let id = event.payload.get("period_id")?.as_str()?;
    uuid::Uuid::parse_str(id).ok().map(period_key)
}

/// The handlers a worker knows, by event type.
#[derive(Clone)]
pub struct Registry {
    handlers: HashMap<&'static str, Arc<dyn Handler>>,
}

impl Registry {
    /// The patronage cooperative's handlers.
    pub fn reference() -> Self {
        let mut registry = Self { handlers: HashMap::new() };
        for handler in period::handlers()
            .into_iter()
            .chain(contribution::handlers())
            .chain(allocation::handlers())
            .chain(payment::handlers())
        {
            registry.handlers.insert(handler.event_type(), handler);
        }
        registry
    }

    /// The same event types, each handler wrapped by `wrap`: how a test
    /// observes every application (its effect probe) without a handler of
    /// its own in the shipped binary.
    pub fn instrumented(self, wrap: impl Fn(Arc<dyn Handler>) -> Arc<dyn Handler>) -> Self {
        Self { handlers: self.handlers.into_iter().map(|(event_type, handler)| (event_type, wrap(handler))).collect() }
    }

    /// The same handlers for a rehearsal: each one with effects outside the
    /// database records them in `effects` instead (the payment provider is
    /// not called). Refused if one of them cannot.
    pub fn sandboxed(&self, effects: &EffectLog) -> Result<Self, Unsandboxed> {
        let mut handlers = HashMap::with_capacity(self.handlers.len());
        for (event_type, handler) in &self.handlers {
            let handler = match (handler.effect(), handler.sandboxed(effects)) {
                (_, Some(sandboxed)) => sandboxed,
                (Effect::Database, None) => handler.clone(),
                (Effect::External, None) => return Err(Unsandboxed(event_type)),
            };
            handlers.insert(*event_type, handler);
        }
        Ok(Self { handlers })
    }

    pub fn get(&self, event_type: &str) -> Option<&Arc<dyn Handler>> {
        self.handlers.get(event_type)
    }

    /// Event types whose handlers reach outside the database.
    pub fn external_effect_types(&self) -> Vec<&'static str> {
        let mut types: Vec<_> =
            self.handlers.values().filter(|h| h.effect() == Effect::External).map(|h| h.event_type()).collect();
        types.sort_unstable();
        types
    }

    /// All known event types, sorted.
    pub fn event_types(&self) -> Vec<&'static str> {
        let mut types: Vec<_> = self.handlers.keys().copied().collect();
        types.sort_unstable();
        types
    }
}

/// Reads an event's payload as the handler's typed shape.
fn payload<T: DeserializeOwned>(event: &Event) -> Result<T, HandlerError> {
    T::deserialize(&event.payload).map_err(|e| HandlerError::Invalid(format!("{} payload: {e}", event.event_type)))
}

/// A handler whose events are rare enough that set-based SQL is not worth
/// its complexity: it applies one event at a time, wrapped by [`Each`].
#[async_trait]
trait OneByOne: Send + Sync {
    /// The payload's shape; an event whose payload does not have it fails
    /// as [`HandlerError::Invalid`] before `apply_one` is called.
    type Payload: DeserializeOwned + Send;

    fn event_type(&self) -> &'static str;

    fn effect(&self) -> Effect {
        Effect::Database
    }

    async fn apply_one(&self, conn: &mut PgConnection, event: &Event, payload: Self::Payload) -> Applied;

    /// See [`Handler::sandboxed`].
    fn sandboxed(&self, _effects: &EffectLog) -> Option<Arc<dyn Handler>> {
        None
    }

    /// The event's sequence key (see [`Handler::sequence_keys`]), from its
    /// payload alone.
    fn sequence_key(&self, _event: &Event) -> Option<String> {
        None
    }
}

/// Adapts a [`OneByOne`] handler to [`Handler`].
struct Each<H>(H);

#[async_trait]
impl<H: OneByOne> Handler for Each<H> {
    fn event_type(&self) -> &'static str {
        self.0.event_type()
    }

    fn effect(&self) -> Effect {
        self.0.effect()
    }

    async fn apply(&self, conn: &mut PgConnection, events: &[&Event]) -> Result<Outcomes, sqlx::Error> {
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events {
            let outcome = match payload::<H::Payload>(event) {
                Ok(parsed) => self.0.apply_one(&mut *conn, event, parsed).await?,
                Err(invalid) => Err(invalid),
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    async fn sequence_keys(&self, _conn: &mut PgConnection, events: &[&Event]) -> Result<Keys, sqlx::Error> {
        Ok(events.iter().map(|event| self.0.sequence_key(event)).collect())
    }

    fn sandboxed(&self, effects: &EffectLog) -> Option<Arc<dyn Handler>> {
        self.0.sandboxed(effects)
    }
}

/// Wraps a one-at-a-time handler for the registry.
fn each(handler: impl OneByOne + 'static) -> Arc<dyn Handler> {
    Arc::new(Each(handler))
}
