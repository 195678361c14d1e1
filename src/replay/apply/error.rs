//! Why an apply did not happen or did not finish: a [`Refusal`] (a check
//! said no, nothing changed: exit 3), a stop that can be resumed (paused,
//! interrupted, the broker refused, a canary's failures halted it), or a
//! failure of what it stands on.

use std::path::PathBuf;

use crate::replay::plan::{DatabaseIdentity, PlanError};
use crate::replay::workflows::WorkflowError;
use crate::store::backup::BackupError;
use crate::store::pause::Pause;
use crate::store::StoreError;
use crate::wire::transport::TransportError;

/// A safety check said no. Nothing was changed: [`check`](super::check)
/// runs every check before the backup, and a refusal the apply's first
/// transaction finds (the workflow's domain moved since) rolls it back; a
/// dump taken meanwhile stays on disk, unused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Edited(PlanError),
    #[error(
        "the plan was made for {planned}, but this is {actual}: apply it where it was made, or make a new plan here"
    )]
    OtherDatabase { planned: DatabaseIdentity, actual: DatabaseIdentity },
    #[error("the plan is stale: {count} of its {total} rows changed since it was made (e.g. {}). Make a new plan with `replay plan`", examples.join(", "))]
    Stale { count: usize, total: usize, examples: Vec<String> },
    #[error("the plan is stale: the domain rows of workflow {workflow} changed since it was made. Make a new plan with `replay plan`")]
    DomainMoved { workflow: String },
    #[error("{0}")]
    Workflow(String),
    #[error("another `replay apply` or `replay emergency-stop` is running on this database: wait for it to finish (see `replay status`), then run this again")]
    Locked,
    #[error("workers are paused since {} by {} ({}): resume them with `replay resume --reason ...` first", .0.paused_at.to_rfc3339(), .0.operator, .0.reason)]
    Paused(Pause),
    #[error("the plan replays {} whose handlers have effects outside the database, which restoring a backup does not undo: pass --allow-external-effects if that is intended", .0.join(", "))]
    ExternalEffects(Vec<String>),
    #[error("this plan was stopped by an emergency stop and its backup restored: make a new plan with `replay plan`")]
    StoppedRun,
    #[error("the backup {path} is {age} old, older than --backup-max-age {max}: take a fresh one (omit --backup) or raise --backup-max-age")]
    BackupTooOld { path: PathBuf, age: String, max: String },
    #[error("the backup {path} cannot be used: {reason}. Omit --backup to take a fresh one")]
    BackupUnusable { path: PathBuf, reason: String },
    #[error("queue {queue} does not exist on the broker: declare it (its subscriber's deployment does) or fix --destination")]
    NoSuchQueue { queue: String },
    #[error("the plan has not been rehearsed, and --require-rehearsal asks for a rehearsal first: run `replay rehearse {}`, read what it would change, then apply", plan.display())]
    NotRehearsed { plan: PathBuf },
    #[error("{reason} (--require-rehearsal asks for a usable rehearsal)")]
    RehearsalUnusable { reason: String },
    #[error("production changed since the plan was rehearsed at {rehearsed_at} ({changed}), so the rehearsal ({report}) may not hold: rehearse it again with `replay rehearse {}`, then apply", plan.display())]
    RehearsalOutdated { rehearsed_at: String, changed: String, plan: PathBuf, report: String },
    #[error("--canary watches our workers settle the events; a plan with a destination publishes to a subscriber we cannot watch: apply it without --canary")]
    CanaryToDestination,
}

/// Why an apply did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Not a `#[from]`: the refusal is the whole message, printed once.
    #[error("refused: {0}")]
    Refused(Refusal),
    #[error("stopped: workers were paused ({reason}) after {reached}. Nothing is lost and nothing was done twice: once the pause is lifted (`replay resume --reason ...`), run the same `replay apply` again to continue where it stopped, with no second backup or audit entry. If an emergency stop paused them, it is in charge: leave this plan", reason = .pause.reason)]
    Paused { pause: Pause, reached: Reached },
    #[error("interrupted after {0}: run the same `replay apply` again to continue where it stopped")]
    Interrupted(Reached),
    #[error("RabbitMQ refused the republish after {reached} ({cause}); nothing else was sent. Fix the cause, then run the same `replay apply` again to continue")]
    BrokerRefused { reached: Reached, cause: String },
    /// A destination replay has no outbox to hand the rest to (the workers'
    /// relay publishes to our exchange, not to the subscriber's queue).
    #[error("RabbitMQ went away after {reached} ({cause}); a destination replay keeps nothing in the outbox. Once RabbitMQ is back, run the same `replay apply` again to continue")]
    BrokerLost { reached: Reached, cause: String },
    /// A canary apply's failures were above its rate: exit 4, resumable.
    #[error("halted {reason}. Fix the cause, then run the same `replay apply` again; the other {} events were not published", .reached.events.saturating_sub(.reached.published))]
    Halted { reason: String, reached: Reached },
    #[error(transparent)]
    Plan(PlanError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("workflow: {0}")]
    Workflow(WorkflowError),
}

/// How far a stopped apply got: rows reset (in plan order) and events
/// confirmed, as its run record holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reached {
    pub reset: u64,
    pub rows: u64,
    pub published: u64,
    pub events: u64,
}

impl std::fmt::Display for Reached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.reset < self.rows {
            write!(f, "{} of {} rows were reset and ", self.reset, self.rows)?;
        }
        write!(f, "{} of {} events were published and confirmed", self.published, self.events)
    }
}

impl ApplyError {
    /// How far it got, when it is a stop a re-run continues.
    pub fn reached_mut(&mut self) -> Option<&mut Reached> {
        match self {
            Self::Paused { reached, .. }
            | Self::Interrupted(reached)
            | Self::BrokerRefused { reached, .. }
            | Self::BrokerLost { reached, .. }
            | Self::Halted { reached, .. } => Some(reached),
            _ => None,
        }
    }
}

impl From<Refusal> for ApplyError {
    fn from(refusal: Refusal) -> Self {
        Self::Refused(refusal)
    }
}

impl From<PlanError> for ApplyError {
    fn from(error: PlanError) -> Self {
        match error {
            PlanError::Tampered { .. } => Self::Refused(Refusal::Edited(error)),
            other => Self::Plan(other),
        }
    }
}

impl From<WorkflowError> for ApplyError {
    fn from(error: WorkflowError) -> Self {
        match error {
            WorkflowError::Refused(reason) => Self::Refused(Refusal::Workflow(reason)),
            other => Self::Workflow(other),
        }
    }
}
