//! Applying a plan: every safety check first, then, in order, a checked
//! backup, one transaction that writes the audit entry and resets the rows
//! (and a workflow's domain rows), and the republish with publisher confirms,
//! paced and resumable.
//!
//! [`check`] and [`execute`] are the runbook; each phase is a file, and
//! states the invariant it keeps beside the code that keeps it:
//! - `checks`: every refusal; a refusal changes nothing.
//! - `reset`: the backup and the one reset transaction; the audit entry, the
//!   run record and the resets commit together or not at all, after the
//!   dump is checked; each row is reset at its planned version and stays
//!   parked for its plan.
//! - `republish`: the confirmed, paced republish and the outbox hand-off; a
//!   run is done only once every event is confirmed or in the outbox.
//! - `error`: what an apply answers when it does not finish.
//!
//! A resumed apply (its run record exists) never repeats the backup, the
//! audit entry or the reset: [`execute`] goes straight to the republish.

mod checks;
mod error;
mod republish;
mod reset;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use checks::{check, Checked};
pub use error::{ApplyError, Refusal};

use crate::config::Endpoints;
use crate::replay::plan::PlanId;
use crate::store::runs;
use crate::wire::publisher::Publisher;
use crate::wire::transport::{self, TransportError};

/// Rows checked and reset per statement.
const RESET_CHUNK: usize = 10_000;

/// Where the pre-replay backup comes from.
#[derive(Debug, Clone)]
pub enum BackupSource {
    /// Take a fresh one into this directory.
    Fresh { dir: PathBuf },
    /// Use this dump if it is younger than `max_age` and readable.
    Existing { path: PathBuf, max_age: Duration },
}

/// How to apply.
#[derive(Debug, Clone)]
pub struct Request {
    pub operator: String,
    pub allow_external_effects: bool,
    pub backup: BackupSource,
    /// Events per second; unpaced when `None`.
    pub rate: Option<u32>,
}

/// Progress of the republish, for a bar or plain lines.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub published: u64,
    pub total: u64,
}

/// What an apply did.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub plan_id: PlanId,
    pub events: u64,
    /// Published by this invocation (less than `events` when resuming).
    pub published_now: u64,
    /// Kept in the outbox because RabbitMQ failed; the workers relay them.
    pub kept_in_outbox: u64,
    /// Why RabbitMQ did not take them (redacted).
    pub broker_error: Option<String>,
    pub resumed: bool,
    pub backup_path: String,
    pub audit_id: i64,
    pub seconds: f64,
    /// Time of each step in seconds: backup, reset (one transaction), publish.
    pub steps: StepTimes,
}

/// How long each step of an apply took, in seconds (0 for a step a resumed apply skips).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StepTimes {
    pub backup: f64,
    pub reset: f64,
    pub publish: f64,
}

/// Backs up, resets and republishes a checked plan.
pub async fn execute(
    pool: &PgPool,
    endpoints: &Endpoints,
    checked: Checked,
    request: &Request,
    shutdown: &CancellationToken,
    mut progress: impl FnMut(Progress),
) -> Result<Outcome, ApplyError> {
    let started = Instant::now();
    let plan = &checked.plan;
    let plan_id = plan.header.plan_id;
    let total = plan.events() as u64;
    let resumed = checked.run.is_some();
    // The broker connection opens while the backup and the reset run.
    let broker = async {
        let connection = transport::connect(&endpoints.amqp_url, &format!("replay apply {plan_id}")).await?;
        let publisher = Publisher::open(&connection, endpoints).await?;
        Ok::<_, TransportError>((connection, publisher))
    };
    let (broker, prepared) = tokio::join!(broker, prepare(pool, endpoints, &checked, request));
    let reset::Prepared { run, steps } = prepared?;

    let step = Instant::now();
    let already = u64::try_from(run.published).unwrap_or(0);
    progress(Progress { published: already, total });
    let (connection, publisher) = match broker {
        Ok((connection, publisher)) => (Some(connection), Ok(publisher)),
        Err(error) => (None, Err(error)),
    };
    let sent = republish::republish(pool, plan, request, shutdown, publisher, already, &mut progress).await?;
    if let (Some(connection), None) = (&connection, &sent.broker_error) {
        transport::close(connection, "apply done").await;
    }

    runs::advance(pool, plan_id, sent.published as i64).await?;
    runs::finish(pool, plan_id).await?;
    Ok(Outcome {
        plan_id,
        events: total,
        published_now: sent.published - already,
        kept_in_outbox: sent.kept_in_outbox,
        broker_error: sent.broker_error,
        resumed,
        backup_path: run.backup_path,
        audit_id: run.audit_id,
        seconds: started.elapsed().as_secs_f64(),
        steps: StepTimes { publish: step.elapsed().as_secs_f64(), ..steps },
    })
}

/// The run to republish: an earlier apply's, as it is (resuming repeats no
/// backup, audit entry or reset), or a new one, backed up and reset.
async fn prepare(
    pool: &PgPool,
    endpoints: &Endpoints,
    checked: &Checked,
    request: &Request,
) -> Result<reset::Prepared, ApplyError> {
    match &checked.run {
        Some(run) => Ok(reset::Prepared { run: run.clone(), steps: StepTimes::default() }),
        None => reset::back_up_and_reset(pool, endpoints, checked, request).await,
    }
}
