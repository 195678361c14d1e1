//! The steps of an emergency stop as the report shows them: each one's name,
//! how long it took, whether it went through, and what it did or why it
//! failed. [`Steps`] records them in order; [`StepError`] is every way a step
//! fails, its message the step's detail.
//!
//! A failed step is recorded, never returned: the stop goes on with what is
//! still safe, and the operator reads every failure at the end.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::store::backup::BackupError;
use crate::store::StoreError;
use crate::wire::transport::TransportError;

/// One step, timed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub name: &'static str,
    pub ms: u64,
    pub ok: bool,
    pub detail: String,
}

/// A step under way: its name and when it began.
#[derive(Debug, Clone, Copy)]
pub(super) struct Started {
    name: &'static str,
    at: Instant,
}

/// The steps of one stop, in the order they ended; serialized as the list.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct Steps(Vec<Step>);

impl Steps {
    /// Starts timing a step.
    pub(super) fn start(name: &'static str) -> Started {
        Started { name, at: Instant::now() }
    }

    /// Records how a step ended: what it did, or why it failed.
    pub(super) fn record(&mut self, step: Started, outcome: Result<String, StepError>) {
        let ms = u64::try_from(step.at.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (ok, detail) = match outcome {
            Ok(detail) => (true, detail),
            Err(error) => (false, error.to_string()),
        };
        self.0.push(Step { name: step.name, ms, ok, detail });
    }

    /// Records the failure of bookkeeping done after the stop's work (the
    /// run record, the audit entry, the report file): reported as 0 ms, and
    /// not reported at all when it succeeds.
    pub(super) fn failed_untimed(&mut self, name: &'static str, error: StepError) {
        self.0.push(Step { name, ms: 0, ok: false, detail: error.to_string() });
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Step> {
        self.0.iter()
    }

    /// The steps that failed.
    pub fn failed(&self) -> Vec<&Step> {
        self.0.iter().filter(|s| !s.ok).collect()
    }
}

impl<'a> IntoIterator for &'a Steps {
    type Item = &'a Step;
    type IntoIter = std::slice::Iter<'a, Step>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Why a step of the stop failed; the message is the step's detail, and says
/// what is left as it was and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("still running after the wait: {}", .0.join(", "))]
    StillRunning(Vec<String>),
    #[error("an apply still holds the lock after {} s: not restoring under it", .0.as_secs())]
    ApplyStillRunning(Duration),
    /// A step that needs the apply lock, which the stop did not get.
    #[error("an apply still holds the lock")]
    NoLock,
    #[error(
        "{0}. What was not taken yet is still in the queue: run the stop again once the broker is back, it continues"
    )]
    QueueNotTaken(TransportError),
    #[error("{0}: the replay's events in the outbox were not removed; run the stop again")]
    OutboxNotDropped(Box<StepError>),
    #[error("the backup {} cannot be read ({source}): pass --backup FILE with a dump that exists", .path.display())]
    BackupUnreadable { path: PathBuf, source: std::io::Error },
    #[error("{0}. The batch being kept was not acked and goes back to the queue: run the stop again, it continues")]
    NotKept(Box<StepError>),
    /// Putting back needs the apply lock: a restore under it could erase what is put back.
    #[error("an apply still holds the lock: {0} event(s) and {1} unreadable message(s) taken off the queue stay saved in replay_control.emergency_saved_events and emergency_saved_dead_letters; run the stop again once the apply has exited to put them back")]
    PutBackWithoutLock(i64, i64),
    #[error("{0}. What the stop took off the queue stays saved in replay_control.emergency_saved_events and emergency_saved_dead_letters, nothing is lost: run the stop again to put it back")]
    NotPutBack(Box<StepError>),
    #[error("{error}. Of {destination}, the plan's messages not taken yet are still there, and every other message is given back (the broker returns what was held when the connection closes): run the stop again, it continues")]
    SubscriberNotTaken { destination: String, error: TransportError },
    #[error("{removed} message(s) of plan {plan} removed from {destination}, but {left} could not be reached: the queue's single active consumer is its subscriber's, so ours was handed nothing. Stop the subscriber's consumers and run the stop again; until then it must drop the messages whose x-replay-plan header is {plan}")]
    SubscriberUnreachable { destination: String, plan: String, removed: u64, left: u64 },
    #[error("{}: {source}", .path.display())]
    ReportNotWritten { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Beginning or committing the stop's own transaction.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl fmt::Display for Step {
    /// One line, as `replay emergency-stop` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<18} {:>6} ms  {}  {}", self.name, self.ms, if self.ok { "ok    " } else { "FAILED" }, self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_recorded_in_order_with_their_outcome_and_serialize_as_the_report_list() {
        let mut steps = Steps::default();
        steps.record(Steps::start("keep"), Ok("2 event(s) added as pending".into()));
        steps.record(Steps::start("ack"), Err(StepError::NoLock));
        steps.failed_untimed("audit", StepError::StillRunning(vec!["w1".into(), "w2".into()]));
        let names: Vec<&str> = steps.iter().map(|s| s.name).collect();
        assert_eq!(names, ["keep", "ack", "audit"]);
        assert_eq!(steps.failed().iter().map(|s| s.name).collect::<Vec<_>>(), ["ack", "audit"]);
        let json = serde_json::to_value(&steps).unwrap();
        assert_eq!(json[0]["detail"], "2 event(s) added as pending");
        assert_eq!(json[0]["ok"], true);
        assert_eq!(
            json[1],
            serde_json::json!({"name": "ack", "ms": json[1]["ms"], "ok": false, "detail": "an apply still holds the lock"})
        );
        assert_eq!(json[2]["ms"], 0);
        assert_eq!(json[2]["detail"], "still running after the wait: w1, w2");
        assert_eq!(json.as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn a_failure_wrapped_by_its_step_keeps_the_cause_first() {
        let outbox = StepError::OutboxNotDropped(Box::new(StepError::NoLock));
        assert_eq!(
            outbox.to_string(),
            "an apply still holds the lock: the replay's events in the outbox were not removed; run the stop again"
        );
        let lock = StepError::ApplyStillRunning(Duration::from_secs(30));
        assert_eq!(lock.to_string(), "an apply still holds the lock after 30 s: not restoring under it");
    }

    #[test]
    fn a_step_prints_as_one_aligned_line() {
        let step = Step { name: "purge", ms: 12, ok: false, detail: "broker gone".into() };
        assert_eq!(step.to_string(), "purge                  12 ms  FAILED  broker gone");
    }
}
