//! One batch of events through the ledger and the handlers, in one
//! transaction.
//!
//! Architecture invariants:
//! - Recording an event, applying its handler and settling its ledger row
//!   happen in one transaction; the caller acks messages only after commit.
//! - Each event is isolated: a run of events of one type is applied under a
//!   savepoint; if a statement fails, the run is rolled back to it and applied
//!   one event at a time, each under its own savepoint.
//! - An event already in the ledger is applied again only if its row is due
//!   (reset by an operator); otherwise its message is a duplicate.

use std::collections::HashSet;

use sqlx::{PgConnection, PgPool};

use crate::dead_letters::{self, DeadLetter};
use crate::envelope::Event;
use crate::handlers::{HandlerError, Outcomes, Registry};
use crate::ledger::{self, Admission, Claimed, LedgerError, Settlement};
use crate::worker::RetryPolicy;

/// What became of a batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub processed: u64,
    pub duplicates: u64,
    pub retrying: u64,
    pub held: u64,
    pub failed: u64,
    pub skipped: u64,
    pub dead_letters: u64,
    /// Settled attempts by (event type, outcome), for the metrics.
    pub by_type: std::collections::BTreeMap<(String, &'static str), u64>,
}

impl Tally {
    fn count(&mut self, event_type: &str, settlement: &Settlement) {
        let (counter, outcome) = match settlement {
            Settlement::Processed => (&mut self.processed, "processed"),
            Settlement::Skipped { .. } => (&mut self.skipped, "skipped"),
            Settlement::Retry { .. } => (&mut self.retrying, "retrying"),
            Settlement::Held { .. } => (&mut self.held, "held"),
            Settlement::Failed { .. } => (&mut self.failed, "failed"),
        };
        *counter += 1;
        *self.by_type.entry((event_type.to_string(), outcome)).or_default() += 1;
    }

    /// Records a committed batch in the metrics.
    fn record(&self, started: std::time::Instant, size: usize) {
        for ((event_type, outcome), n) in &self.by_type {
            metrics::counter!(crate::metrics::EVENTS_PROCESSED, "event_type" => event_type.clone(), "outcome" => *outcome)
                .increment(*n);
        }
        metrics::counter!(crate::metrics::RETRIES).increment(self.retrying);
        metrics::histogram!(crate::metrics::PROCESSING_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::histogram!(crate::metrics::BATCH_SIZE).record(size as f64);
    }
}

/// Failures that abort a whole batch; nothing of it was committed.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("database transaction failed: {0}")]
    Transaction(#[from] sqlx::Error),
    /// A handler statement failed with no savepoint to return to; the batch
    /// is redone with one.
    #[error("a handler statement failed: {0}")]
    Unisolated(sqlx::Error),
    #[error("the database did not finish the batch within {0:?}; it is retried on a fresh connection")]
    TimedOut(std::time::Duration),
}

/// How a batch guards its events from each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isolation {
    /// No savepoints: the common case, when no statement fails. A failing
    /// statement aborts the batch, which is then redone `Savepoints`.
    Optimistic,
    /// A savepoint per run, and per event once a run fails.
    Savepoints,
}

/// An event about to be applied, with its ledger row.
struct Work<'a> {
    row_id: i64,
    event: &'a Event,
    retry_count: i32,
    /// Inserted by this transaction already as `processed`: success needs no
    /// second write.
    inserted: bool,
}

pub struct Pipeline {
    pool: PgPool,
    registry: Registry,
    worker: String,
    retry: RetryPolicy,
    /// Longest a batch may take, commit included: a database that stops
    /// answering (a hung backend) fails the batch instead of holding it forever.
    timeout: std::time::Duration,
}

impl Pipeline {
    pub fn new(
        pool: PgPool,
        registry: Registry,
        worker: String,
        retry: RetryPolicy,
        timeout: std::time::Duration,
    ) -> Self {
        Self { pool, registry, worker, retry, timeout }
    }

    /// Records and applies events that arrived as messages, and stores the
    /// messages that were not events. Commits before returning `Ok`.
    pub async fn process_messages(&self, events: &[Event], dead: &[DeadLetter]) -> Result<Tally, BatchError> {
        let attempt = async {
            match self.messages_with(events, dead, Isolation::Optimistic).await {
                Err(BatchError::Unisolated(e)) => {
                    tracing::debug!(error = %e, "redoing the batch with savepoints");
                    self.messages_with(events, dead, Isolation::Savepoints).await
                }
                other => other,
            }
        };
        // Dropping the attempt drops its connection mid-statement: sqlx closes
        // it rather than return it to the pool, and the transaction rolls back.
        tokio::time::timeout(self.timeout, attempt).await.map_err(|_| BatchError::TimedOut(self.timeout))?
    }

    async fn messages_with(
        &self,
        events: &[Event],
        dead: &[DeadLetter],
        isolation: Isolation,
    ) -> Result<Tally, BatchError> {
        let started = std::time::Instant::now();
        let mut tally = Tally { dead_letters: dead.len() as u64, ..Tally::default() };
        let mut tx = self.pool.begin().await?;
        dead_letters::insert(&mut tx, dead).await?;

        // Several copies of one event in a batch are one event. Inserting in
        // event-id order keeps two workers' batches from deadlocking.
        let received = events.len();
        let mut seen = HashSet::with_capacity(received);
        let mut events: Vec<&Event> = events.iter().filter(|e| seen.insert(e.event_id.as_str())).collect();
        tally.duplicates += (received - events.len()) as u64;
        events.sort_by(|a, b| a.event_id.cmp(&b.event_id));

        let admissions: Vec<Admission<'_>> = events
            .iter()
            .map(|event| match self.registry.get(&event.event_type) {
                Some(_) => Admission { event, status: "processed", note: None },
                None => Admission { event, status: "skipped", note: Some(no_handler(&event.event_type)) },
            })
            .collect();
        let inserted = ledger::insert_new(&mut tx, &admissions).await?;
        let inserted_ids: std::collections::HashMap<String, i64> =
            inserted.into_iter().map(|(id, event_id)| (event_id, id)).collect();

        let mut work = Vec::with_capacity(events.len());
        let mut others = Vec::new();
        for event in events.iter().copied() {
            match inserted_ids.get(&event.event_id) {
                Some(&row_id) if self.registry.get(&event.event_type).is_some() => {
                    work.push(Work { row_id, event, retry_count: 0, inserted: true })
                }
                Some(_) => tally.count(&event.event_type, &Settlement::Skipped { reason: String::new() }),
                None => others.push(event),
            }
        }
        let taken =
            if others.is_empty() { Vec::new() } else { ledger::take_due(&mut tx, &others, &self.worker).await? };
        tally.duplicates += (others.len() - taken.len()) as u64;
        work.extend(taken.iter().map(Work::claimed));

        let settlements = self.apply(&mut tx, work, &mut tally, isolation).await?;
        ledger::settle(&mut tx, &settlements).await?;
        tx.commit().await?;
        tally.record(started, received);
        Ok(tally)
    }

    /// Applies rows this worker claimed from the ledger. Rows whose lease
    /// another worker took over meanwhile are left alone.
    pub async fn process_claimed(&self, claimed: Vec<Claimed>) -> Result<Tally, BatchError> {
        let attempt = async {
            match self.claimed_with(&claimed, Isolation::Optimistic).await {
                Err(BatchError::Unisolated(e)) => {
                    tracing::debug!(error = %e, "redoing the claimed rows with savepoints");
                    self.claimed_with(&claimed, Isolation::Savepoints).await
                }
                other => other,
            }
        };
        tokio::time::timeout(self.timeout, attempt).await.map_err(|_| BatchError::TimedOut(self.timeout))?
    }

    async fn claimed_with(&self, claimed: &[Claimed], isolation: Isolation) -> Result<Tally, BatchError> {
        let started = std::time::Instant::now();
        let mut tally = Tally::default();
        let mut tx = self.pool.begin().await?;
        let ids: Vec<i64> = claimed.iter().map(|c| c.id).collect();
        let held: HashSet<i64> = ledger::lock_claimed(&mut tx, &ids, &self.worker).await?.into_iter().collect();
        let work = claimed.iter().filter(|c| held.contains(&c.id)).map(Work::claimed).collect();
        let settlements = self.apply(&mut tx, work, &mut tally, isolation).await?;
        ledger::settle(&mut tx, &settlements).await?;
        tx.commit().await?;
        tally.record(started, claimed.len());
        Ok(tally)
    }

    /// Applies the work in event-time order, a run of one type at a time, and
    /// returns the ledger writes still owed.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        mut work: Vec<Work<'_>>,
        tally: &mut Tally,
        isolation: Isolation,
    ) -> Result<Vec<(i64, Settlement)>, BatchError> {
        work.sort_by_key(|w| w.event.occurred_at);
        let mut settlements = Vec::new();
        let mut start = 0;
        while start < work.len() {
            let event_type = work[start].event.event_type.as_str();
            let end =
                work[start..].iter().position(|w| w.event.event_type != event_type).map_or(work.len(), |n| start + n);
            let run = &work[start..end];
            let run_settlements: Vec<Settlement> = match self.registry.get(event_type) {
                Some(handler) => {
                    let events: Vec<&Event> = run.iter().map(|w| w.event).collect();
                    let outcomes = match isolation {
                        Isolation::Optimistic => apply_optimistic(conn, handler.as_ref(), &events).await?,
                        Isolation::Savepoints => apply_isolated(conn, handler.as_ref(), &events).await?,
                    };
                    outcomes
                        .into_iter()
                        .zip(run)
                        .map(|(outcome, w)| match outcome {
                            Ok(()) => Settlement::Processed,
                            Err(error) => self.retry.after_failure(&error, w.retry_count, w.inserted),
                        })
                        .collect()
                }
                None => vec![Settlement::Skipped { reason: no_handler(event_type) }; run.len()],
            };
            for (w, settlement) in run.iter().zip(run_settlements) {
                tally.count(event_type, &settlement);
                if let Settlement::Retry { error, .. } | Settlement::Failed { error } = &settlement {
                    tracing::warn!(event_id = %w.event.event_id, event_type, error = %error, "event failed");
                }
                if !(w.inserted && settlement == Settlement::Processed) {
                    settlements.push((w.row_id, settlement));
                }
            }
            start = end;
        }
        Ok(settlements)
    }
}

impl<'a> Work<'a> {
    fn claimed(c: &'a Claimed) -> Self {
        Self { row_id: c.id, event: &c.event, retry_count: c.retry_count, inserted: false }
    }
}

fn no_handler(event_type: &str) -> String {
    format!("no handler is registered for event type '{event_type}'")
}

/// Applies a run with no savepoint: any failing statement aborts the batch.
async fn apply_optimistic(
    conn: &mut PgConnection,
    handler: &dyn crate::handlers::Handler,
    events: &[&Event],
) -> Result<Outcomes, BatchError> {
    match handler.apply(conn, events).await {
        Ok(outcomes) if outcomes.len() == events.len() => Ok(outcomes),
        Ok(_) => Err(BatchError::Unisolated(sqlx::Error::Protocol(format!(
            "handler {} returned the wrong number of outcomes",
            handler.event_type()
        )))),
        Err(e) => Err(BatchError::Unisolated(e)),
    }
}

/// Applies a run under a savepoint; if a statement fails, applies its events
/// one by one, each under its own savepoint, so only the failing one fails.
async fn apply_isolated(
    conn: &mut PgConnection,
    handler: &dyn crate::handlers::Handler,
    events: &[&Event],
) -> Result<Outcomes, sqlx::Error> {
    sqlx::query("SAVEPOINT replay_run").execute(&mut *conn).await?;
    match handler.apply(conn, events).await {
        Ok(outcomes) if outcomes.len() == events.len() => {
            sqlx::query("RELEASE SAVEPOINT replay_run").execute(&mut *conn).await?;
            return Ok(outcomes);
        }
        Ok(outcomes) => {
            tracing::error!(
                handler = handler.event_type(),
                outcomes = outcomes.len(),
                events = events.len(),
                "handler returned the wrong number of outcomes; applying one by one"
            );
        }
        Err(e) if events.len() > 1 => {
            tracing::debug!(handler = handler.event_type(), error = %e, "run failed; applying one by one");
        }
        Err(e) => {
            sqlx::query("ROLLBACK TO SAVEPOINT replay_run").execute(&mut *conn).await?;
            return Ok(vec![Err(HandlerError::Database(e.to_string()))]);
        }
    }
    sqlx::query("ROLLBACK TO SAVEPOINT replay_run").execute(&mut *conn).await?;
    let mut outcomes = Vec::with_capacity(events.len());
    for event in events {
        sqlx::query("SAVEPOINT replay_one").execute(&mut *conn).await?;
        match handler.apply(conn, std::slice::from_ref(event)).await {
            Ok(mut one) if one.len() == 1 => {
                sqlx::query("RELEASE SAVEPOINT replay_one").execute(&mut *conn).await?;
                outcomes.push(one.remove(0));
            }
            Ok(_) => {
                sqlx::query("ROLLBACK TO SAVEPOINT replay_one").execute(&mut *conn).await?;
                outcomes.push(Err(HandlerError::Database("handler returned no outcome".into())));
            }
            Err(e) => {
                sqlx::query("ROLLBACK TO SAVEPOINT replay_one").execute(&mut *conn).await?;
                outcomes.push(Err(HandlerError::Database(e.to_string())));
            }
        }
    }
    Ok(outcomes)
}
