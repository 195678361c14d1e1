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
//! - Events are applied in the order they were delivered (claimed rows in
//!   ledger order), never sorted by their timestamps: the ledger id of a new
//!   row is its place in the partition. Rows waiting for a dependency are
//!   tried before the batch, which was published after them.
//! - An event is never applied while an earlier event of its sequence key
//!   is unapplied for any reason but a missing dependency (retrying, in
//!   `error`, or held itself): it is held behind it and released once that
//!   one is settled. A run applied in one statement in which an event failed
//!   and a later one of its key succeeded is redone with the later one held.

use std::collections::{HashMap, HashSet};

use sqlx::{Acquire, PgConnection};

use crate::handlers::{HandlerError, Outcomes, Registry};
use crate::store::dead_letters::{self, DeadLetter};
use crate::store::ledger::{self, Admission, Blocker, Claimed, Settled, Settlement, Status};
use crate::store::unkeyed;
use crate::store::{is_connection_loss, StoreError};
use crate::wire::envelope::Event;
use crate::worker::RetryPolicy;

/// What became of a batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub processed: u64,
    pub duplicates: u64,
    pub retrying: u64,
    pub held: u64,
    /// Held behind an earlier event of their sequence key.
    pub held_behind: u64,
    pub failed: u64,
    pub skipped: u64,
    pub dead_letters: u64,
    /// Events of the batch that came without a partition key (counted only
    /// with more than one partition).
    pub unkeyed: u64,
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
            Settlement::HeldBehind { .. } => (&mut self.held_behind, "held_behind"),
            Settlement::Failed { .. } => (&mut self.failed, "failed"),
        };
        *counter += 1;
        *self.by_type.entry((event_type.to_string(), outcome)).or_default() += 1;
    }

    /// Records a committed batch in the metrics.
    fn record(&self, started: std::time::Instant, size: usize, partition: i16) {
        if self.unkeyed > 0 {
            metrics::counter!(crate::telemetry::metrics::UNKEYED_EVENTS, "partition" => partition.to_string())
                .increment(self.unkeyed);
        }
        for ((event_type, outcome), n) in &self.by_type {
            metrics::counter!(crate::telemetry::metrics::EVENTS_PROCESSED, "event_type" => event_type.clone(), "outcome" => *outcome)
                .increment(*n);
        }
        metrics::counter!(crate::telemetry::metrics::RETRIES).increment(self.retrying);
        metrics::histogram!(crate::telemetry::metrics::PROCESSING_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::histogram!(crate::telemetry::metrics::BATCH_SIZE).record(size as f64);
    }
}

/// Failures that abort a whole batch; nothing of it was committed.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database transaction failed: {0}")]
    Transaction(#[from] sqlx::Error),
    /// A handler statement failed with no savepoint to return to; the batch
    /// is redone with one.
    #[error("a handler statement failed: {0}")]
    Unisolated(sqlx::Error),
    /// An event failed while a later event of its sequence key, applied in
    /// the same statement, succeeded: the batch is redone with those held.
    #[error("a later event of a failed event's sequence key was applied; redoing the batch with it held")]
    Resequence(Holds),
    #[error("the database did not finish the batch within {0:?}; its connection is abandoned")]
    TimedOut(std::time::Duration),
}

impl BatchError {
    /// Whether the connection the batch ran on can no longer be trusted (a
    /// statement was abandoned mid-way, or the session is gone): the worker
    /// then gives up the partition's leadership that session holds.
    pub fn lost_connection(&self) -> bool {
        match self {
            Self::TimedOut(_) => true,
            Self::Transaction(e) | Self::Unisolated(e) => is_connection_loss(e),
            Self::Store(e) => e.is_connection_loss(),
            Self::Resequence(_) => false,
        }
    }
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
    /// A row waiting for a dependency, tried again before the batch: if it
    /// is still not ready, it is left exactly as it was.
    waiter: bool,
}

/// Events of this batch that must not be applied, by event id, and the
/// earlier event of the batch each waits for: found when the batch was
/// tried before. By event id, since a redone batch inserts its rows anew.
pub type Holds = HashMap<String, String>;

pub struct Pipeline {
    registry: Registry,
    worker: String,
    retry: RetryPolicy,
    /// Longest a batch may take, commit included: a database that stops
    /// answering (a hung backend) fails the batch instead of holding it forever.
    timeout: std::time::Duration,
    /// Most waiting rows tried again before one batch.
    waiters: i64,
    /// The partition this pipeline applies: the ledger rows it inserts,
    /// takes, claims and retries are this partition's only.
    partition: i16,
    /// Whether events without a partition key are counted (more than one
    /// partition: with one, every event is in it anyway).
    count_unkeyed: bool,
}

impl Pipeline {
    pub fn new(
        registry: Registry,
        worker: String,
        retry: RetryPolicy,
        timeout: std::time::Duration,
        waiters: i64,
    ) -> Self {
        Self { registry, worker, retry, timeout, waiters, partition: 0, count_unkeyed: false }
    }

    /// This pipeline for partition `index` of `partitions`.
    pub fn for_partition(self, index: i16, partitions: u16) -> Self {
        Self { partition: index, count_unkeyed: partitions > 1, ..self }
    }

    /// Records and applies events that arrived as messages, in delivery
    /// order, on `conn` (the partition leader's session), and stores the
    /// messages that were not events. Commits before returning `Ok`.
    pub async fn process_messages(
        &self,
        conn: &mut PgConnection,
        events: &[Event],
        dead: &[DeadLetter],
    ) -> Result<Tally, BatchError> {
        let attempt = async {
            let mut holds = Holds::new();
            let mut isolation = Isolation::Optimistic;
            loop {
                match self.messages_with(conn, events, dead, isolation, &holds).await {
                    Err(BatchError::Unisolated(e)) if isolation == Isolation::Optimistic => {
                        tracing::debug!(error = %e, "redoing the batch with savepoints");
                        isolation = Isolation::Savepoints;
                    }
                    Err(BatchError::Resequence(more)) => holds.extend(more),
                    other => return other,
                }
            }
        };
        // Dropping the attempt drops its statement mid-way: the session can no
        // longer be used, the caller abandons it and its transaction rolls back.
        tokio::time::timeout(self.timeout, attempt).await.map_err(|_| BatchError::TimedOut(self.timeout))?
    }

    async fn messages_with(
        &self,
        conn: &mut PgConnection,
        events: &[Event],
        dead: &[DeadLetter],
        isolation: Isolation,
        holds: &Holds,
    ) -> Result<Tally, BatchError> {
        let started = std::time::Instant::now();
        let mut tally = Tally { dead_letters: dead.len() as u64, ..Tally::default() };
        let mut tx = conn.begin().await?;
        dead_letters::insert(&mut tx, dead).await?;

        // Several copies of one event in a batch are one event: the first
        // delivered counts. Delivery order is kept: it is the apply order.
        let received = events.len();
        let mut seen = HashSet::with_capacity(received);
        let events: Vec<&Event> = events.iter().filter(|e| seen.insert(e.event_id.as_str())).collect();
        tally.duplicates += (received - events.len()) as u64;

        let admissions: Vec<Admission<'_>> = events
            .iter()
            .map(|event| match self.registry.get(&event.event_type) {
                Some(_) => Admission { event, status: Status::Processed, note: None },
                None => Admission { event, status: Status::Skipped, note: Some(no_handler(&event.event_type)) },
            })
            .collect();
        let inserted = ledger::insert_new(&mut tx, &admissions, self.partition).await?;
        let unkeyed = if self.count_unkeyed { events.iter().filter(|e| e.partition_key.is_none()).count() } else { 0 };
        if unkeyed > 0 {
            unkeyed::count(&mut tx, self.partition, unkeyed as i64).await?;
        }
        let inserted_ids: HashMap<String, i64> = inserted.into_iter().map(|row| (row.event_id, row.id)).collect();

        let others: Vec<&Event> = events.iter().copied().filter(|e| !inserted_ids.contains_key(&e.event_id)).collect();
        let taken = if others.is_empty() {
            Vec::new()
        } else {
            ledger::take_due(&mut tx, &others, &self.worker, self.partition).await?
        };
        tally.duplicates += (others.len() - taken.len()) as u64;
        let taken_by_id: HashMap<&str, &Claimed> = taken.iter().map(|c| (c.event.event_id.as_str(), c)).collect();

        // Rows waiting for a dependency were published before this batch:
        // they get their chance first.
        let waiting = ledger::lock_waiting(&mut tx, self.partition, self.waiters).await?;
        let mut work: Vec<Work<'_>> = waiting.iter().map(Work::waiting).collect();
        for event in events.iter().copied() {
            if let Some(&row_id) = inserted_ids.get(&event.event_id) {
                if self.registry.get(&event.event_type).is_some() {
                    work.push(Work { row_id, event, retry_count: 0, inserted: true, waiter: false });
                } else {
                    tally.count(&event.event_type, &Settlement::Skipped { reason: String::new() });
                }
            } else if let Some(claimed) = taken_by_id.get(event.event_id.as_str()) {
                work.push(Work::claimed(claimed));
            }
        }

        let settlements = self.apply(&mut tx, work, &mut tally, isolation, holds).await?;
        ledger::settle(&mut tx, &settlements).await?;
        tx.commit().await?;
        tally.unkeyed = unkeyed as u64;
        tally.record(started, received, self.partition);
        Ok(tally)
    }

    /// Applies rows this worker claimed from the ledger, in ledger order,
    /// with the waiting rows among them. Rows whose lease another worker
    /// took over meanwhile are left alone.
    pub async fn process_claimed(&self, conn: &mut PgConnection, claimed: Vec<Claimed>) -> Result<Tally, BatchError> {
        let attempt = async {
            let mut holds = Holds::new();
            let mut isolation = Isolation::Optimistic;
            loop {
                match self.claimed_with(conn, &claimed, isolation, &holds).await {
                    Err(BatchError::Unisolated(e)) if isolation == Isolation::Optimistic => {
                        tracing::debug!(error = %e, "redoing the claimed rows with savepoints");
                        isolation = Isolation::Savepoints;
                    }
                    Err(BatchError::Resequence(more)) => holds.extend(more),
                    other => return other,
                }
            }
        };
        tokio::time::timeout(self.timeout, attempt).await.map_err(|_| BatchError::TimedOut(self.timeout))?
    }

    async fn claimed_with(
        &self,
        conn: &mut PgConnection,
        claimed: &[Claimed],
        isolation: Isolation,
        holds: &Holds,
    ) -> Result<Tally, BatchError> {
        let started = std::time::Instant::now();
        let mut tally = Tally::default();
        let mut tx = conn.begin().await?;
        let ids: Vec<i64> = claimed.iter().map(|c| c.id).collect();
        let held: HashSet<i64> = ledger::lock_claimed(&mut tx, &ids, &self.worker).await?.into_iter().collect();
        let waiting = ledger::lock_waiting(&mut tx, self.partition, self.waiters).await?;
        let mut work: Vec<Work<'_>> = claimed.iter().filter(|c| held.contains(&c.id)).map(Work::claimed).collect();
        work.extend(waiting.iter().map(Work::waiting));
        work.sort_by_key(|w| w.row_id);
        let settlements = self.apply(&mut tx, work, &mut tally, isolation, holds).await?;
        ledger::settle(&mut tx, &settlements).await?;
        tx.commit().await?;
        tally.record(started, claimed.len(), self.partition);
        Ok(tally)
    }

    /// Applies the work in the order given, a run of one type at a time,
    /// each event behind the earlier ones of its sequence key, and returns
    /// the ledger writes still owed.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        work: Vec<Work<'_>>,
        tally: &mut Tally,
        isolation: Isolation,
        holds: &Holds,
    ) -> Result<Vec<Settled>, BatchError> {
        let batch_rows: Vec<i64> = work.iter().map(|w| w.row_id).collect();
        let row_of: HashMap<&str, i64> = work.iter().map(|w| (w.event.event_id.as_str(), w.row_id)).collect();
        let held_in_batch = |event_id: &str| {
            let root = holds.get(event_id)?;
            Some(Blocker { row_id: *row_of.get(root.as_str())?, event_id: root.clone() })
        };
        // Keys this batch has seen fail: later events of them are held.
        let mut failed_keys: HashMap<String, Blocker> = HashMap::new();
        let mut settlements = Vec::new();
        // Events of this batch waiting for a dependency, by position in
        // `work`, with their settlement's place (none for a waiter left as
        // it was): tried again after each later run, which may have brought
        // what they wait for, before anything after it is applied.
        let mut waiting: Vec<(usize, Option<usize>)> = Vec::new();
        let mut start = 0;
        while start < work.len() {
            if !waiting.is_empty() && start > 0 {
                self.retry_waiting(conn, &work, &mut waiting, &mut settlements, tally, isolation, &failed_keys).await?;
            }
            let event_type = work[start].event.event_type.as_str();
            let end =
                work[start..].iter().position(|w| w.event.event_type != event_type).map_or(work.len(), |n| start + n);
            let run = &work[start..end];
            let run_start = start;
            start = end;
            let Some(handler) = self.registry.get(event_type) else {
                for w in run {
                    let settlement = Settlement::Skipped { reason: no_handler(event_type) };
                    tally.count(event_type, &settlement);
                    settlements.push(Settled { row_id: w.row_id, settlement, sequence_key: None });
                }
                continue;
            };
            let events: Vec<&Event> = run.iter().map(|w| w.event).collect();
            let keys = handler.sequence_keys(conn, &events).await.map_err(BatchError::Unisolated)?;
            let key_names: Vec<&str> = keys.iter().flatten().map(String::as_str).collect();
            let blockers = ledger::earliest_blockers(conn, &key_names, &batch_rows).await?;

            // Which events of the run wait behind an earlier one of their key.
            let behind: Vec<Option<Blocker>> = run
                .iter()
                .zip(&keys)
                .map(|(w, key)| {
                    held_in_batch(&w.event.event_id).or_else(|| {
                        let key = key.as_deref()?;
                        failed_keys
                            .get(key)
                            .cloned()
                            .or_else(|| blockers.get(key).filter(|b| b.row_id < w.row_id).cloned())
                    })
                })
                .collect();
            let to_apply: Vec<&Event> =
                run.iter().zip(&behind).filter(|(_, b)| b.is_none()).map(|(w, _)| w.event).collect();
            let mut outcomes = if to_apply.is_empty() {
                Vec::new()
            } else {
                match isolation {
                    Isolation::Optimistic => apply_optimistic(conn, handler.as_ref(), &to_apply).await?,
                    Isolation::Savepoints => apply_isolated(conn, handler.as_ref(), &to_apply).await?,
                }
            }
            .into_iter();

            let mut resequence = Holds::new();
            let mut run_failed: HashMap<&str, Blocker> = HashMap::new();
            for (position, ((w, key), blocker)) in run.iter().zip(&keys).zip(behind).enumerate() {
                let position = run_start + position;
                let settlement = match blocker {
                    Some(blocker) => Settlement::HeldBehind {
                        reason: format!(
                            "held behind {}: an earlier event of {} that is not applied yet",
                            blocker.event_id,
                            key.as_deref().unwrap_or("its sequence")
                        ),
                        behind: blocker.row_id,
                    },
                    None => match outcomes.next() {
                        Some(Ok(())) => Settlement::Processed,
                        // Still waiting, and tried only because it was waiting: left as it was.
                        Some(Err(HandlerError::NotReady(_))) if w.waiter => {
                            waiting.push((position, None));
                            continue;
                        }
                        Some(Err(error)) => self.retry.after_failure(&error, w.retry_count, w.inserted),
                        None => Settlement::Failed { error: "the handler returned no outcome".into(), waiting: false },
                    },
                };
                if let Some(key) = key.as_deref() {
                    if settlement == Settlement::Processed {
                        // Applied in the same statement as an earlier failure of its key.
                        if let Some(root) = run_failed.get(key) {
                            resequence.insert(w.event.event_id.clone(), root.event_id.clone());
                        }
                    } else if blocks(&settlement) {
                        let root = Blocker { row_id: w.row_id, event_id: w.event.event_id.clone() };
                        run_failed.entry(key).or_insert_with(|| root.clone());
                        failed_keys.entry(key.to_string()).or_insert(root);
                    }
                }
                tally.count(event_type, &settlement);
                if let Settlement::Retry { error, .. } | Settlement::Failed { error, .. } = &settlement {
                    tracing::warn!(event_id = %w.event.event_id, event_type, error = %error, "event failed");
                }
                let waits = matches!(settlement, Settlement::Held { .. } | Settlement::Retry { waiting: true, .. });
                if !(w.inserted && settlement == Settlement::Processed) {
                    settlements.push(Settled { row_id: w.row_id, settlement, sequence_key: key.clone() });
                }
                if waits {
                    waiting.push((position, Some(settlements.len() - 1)));
                }
            }
            if !resequence.is_empty() {
                return Err(BatchError::Resequence(resequence));
            }
        }
        // The last run may have brought what the waiters wait for, and a
        // waiter applied now may be what another waits for (an approval
        // behind its submission behind its period): again while any applies.
        while !waiting.is_empty() {
            let before = waiting.len();
            self.retry_waiting(conn, &work, &mut waiting, &mut settlements, tally, isolation, &failed_keys).await?;
            if waiting.len() == before {
                break;
            }
        }
        Ok(settlements)
    }

    /// Tries the batch's waiting events again, a run of one type at a time;
    /// the ones applied now are settled as processed instead, the others
    /// keep their settlement. One whose key failed meanwhile stays waiting.
    #[allow(clippy::too_many_arguments)]
    async fn retry_waiting(
        &self,
        conn: &mut PgConnection,
        work: &[Work<'_>],
        waiting: &mut Vec<(usize, Option<usize>)>,
        settlements: &mut Vec<Settled>,
        tally: &mut Tally,
        isolation: Isolation,
        failed_keys: &HashMap<String, Blocker>,
    ) -> Result<(), BatchError> {
        let candidates: Vec<(usize, Option<usize>)> = waiting
            .iter()
            .copied()
            .filter(|(i, at)| {
                let key = at.and_then(|at| settlements[at].sequence_key.as_deref());
                key.is_none_or(|k| failed_keys.get(k).is_none_or(|b| b.row_id >= work[*i].row_id))
            })
            .collect();
        let mut applied = HashSet::new();
        let mut start = 0;
        while start < candidates.len() {
            let event_type = work[candidates[start].0].event.event_type.as_str();
            let end = candidates[start..]
                .iter()
                .position(|(i, _)| work[*i].event.event_type != event_type)
                .map_or(candidates.len(), |n| start + n);
            let group = &candidates[start..end];
            start = end;
            let Some(handler) = self.registry.get(event_type) else { continue };
            let events: Vec<&Event> = group.iter().map(|(i, _)| work[*i].event).collect();
            let outcomes = match isolation {
                Isolation::Optimistic => apply_optimistic(conn, handler.as_ref(), &events).await?,
                Isolation::Savepoints => apply_isolated(conn, handler.as_ref(), &events).await?,
            };
            for ((i, at), outcome) in group.iter().zip(outcomes) {
                if outcome.is_err() {
                    continue;
                }
                let w = &work[*i];
                tally.count(event_type, &Settlement::Processed);
                let key = at.and_then(|at| settlements[at].sequence_key.clone());
                let done = Settled { row_id: w.row_id, settlement: Settlement::Processed, sequence_key: key };
                match at {
                    Some(at) => settlements[*at] = done,
                    None => settlements.push(done),
                }
                applied.insert(*i);
            }
        }
        waiting.retain(|(i, _)| !applied.contains(i));
        Ok(())
    }
}

/// Whether a settlement leaves its event unapplied in a way that later
/// events of its key must wait for. A row waiting for a dependency does not:
/// what it waits for may be one of those later events.
fn blocks(settlement: &Settlement) -> bool {
    match settlement {
        Settlement::Retry { waiting, .. } => !waiting,
        Settlement::Failed { waiting, .. } => !waiting,
        Settlement::HeldBehind { .. } => true,
        Settlement::Processed | Settlement::Skipped { .. } | Settlement::Held { .. } => false,
    }
}

impl<'a> Work<'a> {
    fn claimed(c: &'a Claimed) -> Self {
        Self { row_id: c.id, event: &c.event, retry_count: c.retry_count, inserted: false, waiter: false }
    }

    fn waiting(c: &'a Claimed) -> Self {
        Self { waiter: true, ..Self::claimed(c) }
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
