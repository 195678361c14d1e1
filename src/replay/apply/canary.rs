//! The canary apply (`--canary N [--max-failure-rate R]`): the republish
//! publishes the plan's first N events, waits (at most `--canary-wait`) until
//! the workers settled them, and goes on only if at most R of them failed;
//! then, while it publishes the rest, it halts once the plan's failures so
//! far are above R of its rows settled so far.
//!
//! Invariants:
//! - Nothing past the canary is published before the canary settled within
//!   the rate: the first phase of the republish stops at exactly N events.
//! - A halt is a stop like a pause: the run's progress is recorded, the
//!   unpublished rest stays parked for the plan (held from claimers by
//!   `mod.rs` until a re-run releases it), and the halt is audited
//!   (`replay.halt`, in its own short transaction, which also records the
//!   halt on the run: shown as state `halted`, with why, until `execute`
//!   lifts it when the same apply runs again) before it is answered.
//! - A resumed canary apply retries the plan's rows that failed for good
//!   (reset again at their current version, republished) as its canary and
//!   waits for them before it publishes more; rows still retrying are the
//!   workers'. Without `--canary` a re-run publishes the rest unwatched.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::republish::labelled;
use super::reset::fallback_time;
use super::{stop_here, ApplyError, Reached, Request};
use crate::replay::plan::SealedPlan;
use crate::store::audit::{self, AuditEntry};
use crate::store::ledger::{self, RowVersion, SettledCount};
use crate::store::{failed, runs, StoreError};
use crate::wire::publisher::Publisher;

/// How long a canary waits for its events to settle unless told.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// How often a waiting canary counts its settled rows.
const POLL: Duration = Duration::from_millis(250);
/// Batches of the rest between two counts of the plan's failures, and the
/// least time between two: the count reads every row reset so far.
const GUARD_BATCHES: u32 = 4;
const GUARD_EVERY: Duration = Duration::from_secs(1);
/// Failed rows reset again and republished per transaction when a canary
/// apply resumes.
const RETRY_CHUNK: usize = 500;

/// A canary apply's policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Canary {
    /// Events published and settled before the rest.
    pub events: u64,
    /// Highest share of failures (0..=1) the canary and the rest may have.
    pub max_failure_rate: f64,
    /// Longest wait for the canary's events to settle.
    pub wait: Duration,
}

impl Canary {
    /// A checked policy; the error names the flag and the fix.
    pub fn new(events: u64, max_failure_rate: f64, wait: Duration) -> Result<Self, String> {
        if events == 0 {
            return Err("--canary must be at least 1 event (e.g. --canary 10)".into());
        }
        checked_rate(max_failure_rate, &max_failure_rate.to_string())?;
        if wait.is_zero() {
            return Err("--canary-wait must be longer than 0 s (e.g. --canary-wait 60s)".into());
        }
        Ok(Self { events, max_failure_rate, wait })
    }

    /// Whether `failed` of `of` is within the rate.
    fn allows(&self, failed: i64, of: i64) -> bool {
        of <= 0 || failed as f64 <= self.max_failure_rate * of as f64
    }

    /// "3 of 5 canary events failed (60% > 0%): example".
    fn over(&self, failed: i64, of: i64, what: &str, example: Option<&str>) -> String {
        let share = if of > 0 { failed as f64 / of as f64 } else { 0.0 };
        let example = example.map(|e| format!(": {e}")).unwrap_or_default();
        format!("{failed} of {of} {what} failed ({} > {}){example}", percent(share), percent(self.max_failure_rate))
    }
}

/// Reads `--max-failure-rate`: a fraction from 0 to 1.
pub fn parse_failure_rate(text: &str) -> Result<f64, String> {
    checked_rate(text.trim().parse::<f64>().unwrap_or(f64::NAN), text)
}

fn checked_rate(rate: f64, text: &str) -> Result<f64, String> {
    match (0.0..=1.0).contains(&rate) {
        true => Ok(rate),
        false => Err(format!("--max-failure-rate must be a fraction from 0 to 1 (e.g. 0.05 for 5%), not {text}")),
    }
}

fn percent(share: f64) -> String {
    format!("{}%", (share * 1000.0).round() / 10.0)
}

/// Waits until every row of the canary `event_ids` is settled, then halts
/// unless its failures are within the rate; halts too if they are not all
/// settled within the canary's wait. `what` names it in the reason.
pub(super) async fn judge(
    pool: &PgPool,
    plan: &SealedPlan,
    request: &Request,
    canary: &Canary,
    shutdown: &CancellationToken,
    event_ids: &[String],
    what: &str,
) -> Result<(), ApplyError> {
    let started = Instant::now();
    let settled = loop {
        let settled = ledger::settled_events(pool, event_ids).await?;
        if settled.settled >= settled.rows {
            break settled;
        }
        if started.elapsed() >= canary.wait {
            let reason = format!(
                "after the {what}: only {} of its {} events were settled within {} s (raise --canary-wait if the workers are slow)",
                settled.settled,
                settled.rows,
                canary.wait.as_secs()
            );
            return Err(halt(pool, plan, request, canary, reason, &settled).await?);
        }
        if let Some(stop) = stop_here(pool, shutdown, None).await? {
            return Err(stop);
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.cancelled() => {}
        }
    };
    if canary.allows(settled.failed, settled.rows) {
        tracing::info!(settled = settled.settled, failed = settled.failed, "the {what} passed; publishing the rest");
        return Ok(());
    }
    let reason = format!(
        "after the {what}: {}",
        canary.over(settled.failed, settled.rows, &format!("{what} events"), settled.example.as_deref())
    );
    Err(halt(pool, plan, request, canary, reason, &settled).await?)
}

/// Resets the plan's rows that failed for good again (each at its current
/// version, with a history entry) and republishes them: a resumed canary
/// apply's canary. Returns their event ids (none: nothing to retry).
pub(super) async fn retry_failed(
    pool: &PgPool,
    plan: &SealedPlan,
    request: &Request,
    canary: &Canary,
    shutdown: &CancellationToken,
    publisher: &Publisher,
) -> Result<Vec<String>, ApplyError> {
    let plan_id = plan.header.plan_id;
    let failed_rows = ledger::failed_of_plan(pool, plan_id.as_uuid()).await?;
    if failed_rows.is_empty() {
        return Ok(Vec::new());
    }
    tracing::info!(rows = failed_rows.len(), "retrying the plan's failed rows as the canary");
    let fallback = fallback_time(failed_rows.len(), request.rate);
    let mut retried = Vec::with_capacity(failed_rows.len());
    // A chunk at a time, each reset committed before its events are published.
    for chunk in failed_rows.chunks(RETRY_CHUNK) {
        let rows: Vec<RowVersion> = chunk.iter().map(|f| f.row.clone()).collect();
        let ids: Vec<String> = chunk.iter().map(|f| f.event_id.clone()).collect();
        let mut tx = pool.begin().await.map_err(failed("resetting a canary's failed rows"))?;
        ledger::reset_for_plan(&mut tx, &rows, plan_id.as_uuid(), &request.operator, fallback, plan.header.force)
            .await?;
        tx.commit().await.map_err(failed("resetting a canary's failed rows"))?;
        let batch = labelled(pool, ids.clone(), plan_id).await?;
        if let Err(error) = publisher.publish_all(&batch.events, |_| {}).await {
            if let Some(stop) = stop_here(pool, shutdown, Some(&error)).await? {
                return Err(stop);
            }
            let reason = format!("before the retried canary: RabbitMQ failed ({})", error.cause());
            return Err(halt(pool, plan, request, canary, reason, &SettledCount::default()).await?);
        }
        retried.extend(ids);
    }
    Ok(retried)
}

/// Watches the rest of a canary apply: every few batches, the plan's
/// failures so far against its rows settled so far.
pub(super) struct Guard {
    canary: Canary,
    batches: u32,
    last: Option<Instant>,
}

impl Guard {
    pub(super) fn new(canary: Canary) -> Self {
        Self { canary, batches: 0, last: None }
    }

    /// Called before each batch: `Some(halt)` once the plan's failures are
    /// above the rate (the first call counts at once).
    pub(super) async fn check(
        &mut self,
        pool: &PgPool,
        plan: &SealedPlan,
        request: &Request,
    ) -> Result<Option<ApplyError>, ApplyError> {
        self.batches += 1;
        let due = self.last.is_none_or(|at| self.batches >= GUARD_BATCHES && at.elapsed() >= GUARD_EVERY);
        if !due {
            return Ok(None);
        }
        (self.batches, self.last) = (0, Some(Instant::now()));
        let settled = ledger::plan_settled(pool, plan.header.plan_id.as_uuid()).await?;
        if self.canary.allows(settled.failed, settled.settled) {
            return Ok(None);
        }
        let over =
            self.canary.over(settled.failed, settled.settled, "events settled so far", settled.example.as_deref());
        let reason = format!("during the apply: {over}");
        Ok(Some(halt(pool, plan, request, &self.canary, reason, &settled).await?))
    }
}

/// Audits a halt (`replay.halt`, its own short transaction) and answers it;
/// how far the apply got is filled in by [`super::execute`].
pub(super) async fn halt(
    pool: &PgPool,
    plan: &SealedPlan,
    request: &Request,
    canary: &Canary,
    reason: String,
    settled: &SettledCount,
) -> Result<ApplyError, StoreError> {
    let entry = AuditEntry {
        operator: request.operator.clone(),
        action: "replay.halt".into(),
        details: serde_json::json!({
            "plan_id": plan.header.plan_id,
            "reason": reason,
            "canary": canary.events,
            "max_failure_rate": canary.max_failure_rate,
            "events": plan.events(),
            "rows_counted": settled.rows,
            "settled": settled.settled,
            "failed": settled.failed,
        }),
    };
    let mut tx = pool.begin().await.map_err(failed("auditing a halt"))?;
    audit::append(&mut tx, &entry).await?;
    runs::halted(&mut tx, plan.header.plan_id, &reason).await?;
    tx.commit().await.map_err(failed("auditing a halt"))?;
    tracing::warn!(plan = %plan.header.plan_id, reason = %reason, "apply halted");
    Ok(ApplyError::Halted { reason, reached: Reached::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(policy: Result<Canary, String>, wanted: &str) -> bool {
        policy.err().is_some_and(|e| e.contains(wanted))
    }

    #[test]
    fn a_policy_out_of_range_names_its_flag_and_the_fix() {
        assert!(refused(Canary::new(0, 0.0, DEFAULT_WAIT), "--canary must be at least 1"));
        assert!(refused(Canary::new(5, 2.0, DEFAULT_WAIT), "--max-failure-rate must be a fraction from 0 to 1"));
        assert!(refused(Canary::new(5, 0.1, Duration::ZERO), "--canary-wait"));
        assert!(parse_failure_rate("-0.1").is_err() && parse_failure_rate("NaN").is_err());
        assert_eq!(parse_failure_rate("0.05"), Ok(0.05));
    }

    #[test]
    fn the_rate_is_a_ceiling_and_the_reason_says_by_how_much() -> Result<(), String> {
        let canary = Canary::new(5, 0.0, DEFAULT_WAIT)?;
        assert!(canary.allows(0, 5) && !canary.allows(1, 5) && canary.allows(0, 0));
        let tenth = Canary::new(10, 0.1, DEFAULT_WAIT)?;
        assert!(tenth.allows(1, 10) && !tenth.allows(2, 10));
        assert_eq!(
            canary.over(3, 5, "canary events", Some("contribution.approved: contribution x not found")),
            "3 of 5 canary events failed (60% > 0%): contribution.approved: contribution x not found"
        );
        Ok(())
    }
}
