//! What the stop keeps of what it takes off the queue, and where. Each batch
//! is written in its own transaction before it is acked: straight into the
//! ledger (events as `pending`) and `dead_letters` when no restore follows
//! and the stop holds the apply lock; otherwise into the control plane's
//! save tables (`store::emergency_saved`), which no restore touches. After
//! the restore, [`put_back`] moves everything saved (this stop's, or what a
//! stop that died left) into the ledger and `dead_letters` in one
//! transaction.
//!
//! Invariant: nothing reaches the ledger that a restore could still erase.
//! Written straight in only under the apply lock with no restore to follow
//! (the lock is what keeps any other stop from restoring meanwhile), and put
//! back only under the lock, after this stop's restore.

use sqlx::PgPool;

use super::steps::StepError;
use crate::store::dead_letters::{self, DeadLetter};
use crate::store::emergency_saved;
use crate::store::ledger;
use crate::store::runs::ControlLock;
use crate::wire::envelope::Event;

/// Rows moved per statement when saved events are put back.
const PUT_BACK_CHUNK: i64 = 5_000;

/// Where the kept part of each batch is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keeping {
    /// Into the ledger and `dead_letters`, at once.
    Ledger,
    /// Into the save tables, to be put back after the restore.
    Saved,
}

impl Keeping {
    /// Straight into the ledger only when nothing will be restored and the
    /// stop holds the apply lock (see the module's invariant).
    pub fn choose(restoring: bool, lock: Option<&ControlLock>) -> Self {
        match (restoring, lock) {
            (false, Some(_)) => Self::Ledger,
            _ => Self::Saved,
        }
    }
}

/// Writes what is kept of one batch, in one transaction. Returns how many
/// events were added to the ledger (none when saved; an event the ledger
/// already holds is skipped).
pub(super) async fn batch(
    pool: &PgPool,
    keeping: Keeping,
    events: &[Event],
    partition: i16,
    dead: &[DeadLetter],
) -> Result<u64, StepError> {
    if events.is_empty() && dead.is_empty() {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    let added = match keeping {
        Keeping::Ledger => {
            let added = ledger::insert_pending(&mut tx, events, &vec![partition; events.len()]).await?;
            dead_letters::insert(&mut tx, dead).await?;
            added
        }
        Keeping::Saved => {
            emergency_saved::save_events(&mut tx, events, partition).await?;
            emergency_saved::save_dead_letters(&mut tx, dead).await?;
            0
        }
    };
    tx.commit().await?;
    Ok(added)
}

/// What [`put_back`] moved.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PutBack {
    /// Saved events taken out of the save table.
    pub saved: u64,
    /// Of those, the ones the ledger did not hold yet, added as pending.
    pub added: u64,
    pub dead_letters: u64,
}

/// Moves every saved event into the ledger as pending (in the order they
/// were saved) and every saved dead letter into `dead_letters`, deleting
/// them from the save tables in the same transaction.
pub(super) async fn put_back(pool: &PgPool) -> Result<PutBack, StepError> {
    let mut tx = pool.begin().await?;
    let mut moved = PutBack::default();
    let mut after = 0;
    loop {
        let chunk = emergency_saved::take_events(&mut tx, after, PUT_BACK_CHUNK).await?;
        if chunk.rows.is_empty() {
            break;
        }
        after = chunk.last_id;
        moved.saved += chunk.rows.len() as u64;
        let (events, partitions): (Vec<Event>, Vec<i16>) = chunk.rows.into_iter().unzip();
        moved.added += ledger::insert_pending(&mut tx, &events, &partitions).await?;
    }
    let mut after = 0;
    loop {
        let chunk = emergency_saved::take_dead_letters(&mut tx, after, PUT_BACK_CHUNK).await?;
        if chunk.rows.is_empty() {
            break;
        }
        after = chunk.last_id;
        moved.dead_letters += chunk.rows.len() as u64;
        dead_letters::insert(&mut tx, &chunk.rows).await?;
    }
    tx.commit().await?;
    Ok(moved)
}
