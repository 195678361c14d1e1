//! Making a replay plan: what `replay plan` does between reading its flags
//! and printing, as a library call the CLI and the web console share, so a
//! plan is checked, made and shown by one implementation.
//!
//! [`PlanRequest::validate`] holds every check of a request (nothing
//! selected, no reason, a zero rate, an unknown workflow); [`make`] runs it
//! again, then reads the database's identity, inspects the workflow,
//! streams the selected rows into a [`PlanWriter`], samples them and seals
//! the plan. [`summary_json`] and [`human`] are the two ways a sealed plan
//! is shown: `--json` and the five-second read.
//!
//! Architecture invariant: making a plan changes nothing in the database; it
//! only reads, and writes the plan file (removed again when the plan is not
//! finished).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{json, Value};
use sqlx::PgPool;

use crate::handlers::Registry;
use crate::replay::plan::{Destination, Header, PlanError, PlanWriter, RowRef, SealedPlan, Trigger, WorkflowPlan};
use crate::replay::selector::Selector;
use crate::replay::workflows::{self, Params, Workflow, WorkflowError};
use crate::store::{database, ledger, StoreError};

/// Sample payloads shown in the summary.
const SAMPLES: i64 = 3;

/// What a caller shows when [`make`] answers [`Planned::Nothing`].
pub const NOTHING_TO_REPLAY: &str = "nothing to replay: no ledger row matches these selectors. No plan was written.";

/// What to plan: the selector (None = workflow only), workflow, params, who and why.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    pub selector: Option<Selector>,
    /// A workflow's name, as `--workflow` takes it.
    pub workflow: Option<String>,
    /// The workflow's `period` parameter: an id, or `latest-closed`.
    pub period: Option<String>,
    /// The workflow's `member` parameter.
    pub member: Option<String>,
    pub operator: String,
    pub reason: String,
    /// Rows are treated as new: idempotency is skipped. Dangerous.
    pub force: bool,
    /// The republish rate (events per second) a duration estimate assumes.
    /// Not part of the plan; checked here so every caller refuses 0 alike.
    pub rate: Option<u32>,
    /// The directory the plan file is written to.
    pub out_dir: PathBuf,
    /// One subscriber's queue to publish to instead of our workers
    /// (`--destination queue:NAME`): recorded in the plan's header.
    pub destination: Option<Destination>,
}

/// What [`make`] did.
#[derive(Debug)]
// Made once per plan and matched at once: boxing the plan would only add an
// indirection to every caller.
#[allow(clippy::large_enum_variant)]
pub enum Planned {
    /// No ledger row matched and there is no workflow: no plan was written.
    Nothing,
    Written(SealedPlan),
}

/// Why no plan was made. `Usage` and `Refused` carry the message the
/// operator reads (the CLI exits 2 and 3 on them); nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum PlanningError {
    /// The request is not usable as given.
    #[error("{0}")]
    Usage(String),
    /// The domain's state forbids this plan (a workflow refused).
    #[error("{0}")]
    Refused(String),
    #[error("reading the database's identity")]
    Identity(#[source] StoreError),
    #[error("reading the workflow's domain rows")]
    DomainRows(#[source] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A workflow's query failed (its usage errors and refusals are `Usage`
    /// and `Refused`).
    #[error(transparent)]
    Workflow(WorkflowError),
}

impl From<WorkflowError> for PlanningError {
    fn from(error: WorkflowError) -> Self {
        match error {
            WorkflowError::Usage(message) => Self::Usage(message),
            WorkflowError::Refused(message) => Self::Refused(message),
            other => Self::Workflow(other),
        }
    }
}

impl PlanRequest {
    /// Every check of the request that needs no database, in the order the
    /// operator is told about them. [`make`] runs it too; a caller runs it
    /// first only to report a usage error before connecting.
    pub fn validate(&self) -> Result<(), PlanningError> {
        self.workflow().map(|_| ())
    }

    /// The checks of [`validate`](Self::validate), and the workflow named.
    fn workflow(&self) -> Result<Option<Box<dyn Workflow>>, PlanningError> {
        if self.selector.is_none() && self.workflow.is_none() {
            return Err(PlanningError::Usage(
                "nothing selected: give a selector (--event-id, --type, --from/--to, --processed-from/--processed-to, \
                 --status, --payload), a --workflow, or --all for the whole ledger"
                    .into(),
            ));
        }
        if self.reason.trim().is_empty() {
            return Err(PlanningError::Usage("--reason is empty: say why this replay is needed".into()));
        }
        if self.rate == Some(0) {
            return Err(PlanningError::Usage("--rate must be at least 1 event per second".into()));
        }
        if let (Some(destination), Some(_)) = (&self.destination, &self.workflow) {
            return Err(PlanningError::Usage(format!(
                "--destination {destination} replays ledger events to one subscriber; a --workflow resets rows in this database: plan them apart"
            )));
        }
        Ok(self.workflow.as_deref().map(workflows::find).transpose()?)
    }

    /// The workflow's parameters, as given.
    fn params(&self) -> Params {
        let mut params = Params::new();
        for (key, value) in [("period", &self.period), ("member", &self.member)] {
            if let Some(value) = value {
                params.insert(key.to_string(), value.clone());
            }
        }
        params
    }
}

/// Checks the request, then writes and seals its plan under
/// `request.out_dir`; or writes nothing when no row matches and there is no
/// workflow. Reads the database, changes nothing in it.
pub async fn make(pool: &PgPool, request: &PlanRequest) -> Result<Planned, PlanningError> {
    let workflow = request.workflow()?;
    let identity = database::identity(pool).await.map_err(PlanningError::Identity)?;
    let mut header = Header::new(
        request.operator.clone(),
        request.reason.clone(),
        request.force,
        request.selector.clone(),
        identity,
    );
    header.destination = request.destination.clone();
    if let Some(workflow) = workflow {
        header.workflow = Some(inspect(pool, workflow.as_ref(), request.params(), &header).await?);
    }

    let mut writer = PlanWriter::create(&request.out_dir, header)?;
    let samples = match &request.selector {
        Some(selector) => match stream_and_sample(pool, selector, &mut writer).await {
            Ok(samples) => samples,
            Err(error) => {
                // A plan that was not finished must not be left for an apply.
                writer.abandon();
                return Err(error);
            }
        },
        None => Vec::new(),
    };
    if writer.rows() == 0 && writer.header().workflow.is_none() {
        writer.abandon();
        return Ok(Planned::Nothing);
    }
    Ok(Planned::Written(writer.seal(samples, &Registry::reference())?))
}

/// What the workflow found, as the plan records it, its triggers given ids
/// derived from the plan's.
async fn inspect(
    pool: &PgPool,
    workflow: &dyn Workflow,
    params: Params,
    header: &Header,
) -> Result<WorkflowPlan, PlanningError> {
    let mut conn = pool.acquire().await.map_err(PlanningError::DomainRows)?;
    let inspection = workflow.inspect(&mut conn, &params).await?;
    let triggers = inspection
        .triggers
        .into_iter()
        .enumerate()
        .map(|(n, t)| Trigger {
            event_id: header.trigger_id(n, &t.event_type),
            event_type: t.event_type,
            occurred_at: t.occurred_at,
            payload: t.payload,
        })
        .collect();
    Ok(WorkflowPlan {
        name: workflow.name().to_string(),
        params: inspection.params,
        steps: inspection.steps,
        domain_rows: inspection.domain_rows,
        fingerprint: inspection.fingerprint,
        triggers,
    })
}

/// Streams the selected rows into the plan (never all in memory), then
/// reads the first few in full as samples.
async fn stream_and_sample(
    pool: &PgPool,
    selector: &Selector,
    writer: &mut PlanWriter,
) -> Result<Vec<Value>, PlanningError> {
    ledger::for_each_selected(pool, selector, |row| -> Result<(), PlanningError> {
        let planned = RowRef(row.id, row.event_id, row.event_type, row.status, row.version);
        Ok(writer.push(planned, row.occurred_at)?)
    })
    .await?;
    let first = Selector { limit: Some(selector.limit.map_or(SAMPLES, |l| l.min(SAMPLES))), ..selector.clone() };
    Ok(ledger::select(pool, &first, ledger::Order::EventTime)
        .await?
        .into_iter()
        .map(|r| json!({"event_id": r.event_id, "event_type": r.event_type, "payload": r.payload}))
        .collect())
}

/// A sealed plan as `replay plan --json` prints it; `rate` gives the
/// estimated duration.
pub fn summary_json(plan: &SealedPlan, rate: Option<u32>) -> Value {
    let s = &plan.summary;
    json!({
        "plan_id": plan.header.plan_id,
        "plan_path": plan.path,
        "rows": s.rows,
        "events": plan.events(),
        "by_type": s.by_type,
        "by_status": s.by_status,
        "by_day": s.by_day,
        "first_occurred_at": s.first_occurred_at,
        "last_occurred_at": s.last_occurred_at,
        "samples": s.samples,
        "workflow": plan.header.workflow,
        "destination": plan.header.destination,
        "estimated_seconds": rate.map(|r| plan.events() as f64 / f64::from(r)),
        "warnings": s.warnings,
        "digest": plan.digest,
    })
}

/// [`Planned::Nothing`] as `replay plan --json` prints it.
pub fn nothing_json() -> Value {
    json!({"plan_id": null, "plan_path": null, "rows": 0, "by_type": {}, "warnings": []})
}

/// The five-second read of a plan: what `replay plan` and `replay apply`
/// show before anything changes.
pub fn human(plan: &SealedPlan, rate: Option<u32>) -> String {
    let s = &plan.summary;
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(
        out,
        "plan {}: {} to replay, {} to publish (reason: {})",
        plan.header.plan_id,
        count(s.rows, "row"),
        count(plan.events(), "event"),
        plan.header.reason
    );
    if let Some(destination) = &plan.header.destination {
        let _ = writeln!(
            out,
            "  destination: {destination} (published to that queue only; our workers and this database are not touched)"
        );
    }
    if s.rows > 0 {
        let _ = writeln!(out, "  by type:    {}", counts(&s.by_type));
        let _ = writeln!(out, "  by status:  {}", counts(&s.by_status));
        let _ = writeln!(out, "  by day:     {}", counts(&s.by_day));
    }
    if let (Some(first), Some(last)) = (s.first_occurred_at, s.last_occurred_at) {
        let _ = writeln!(out, "  time span:  {} .. {}", first.to_rfc3339(), last.to_rfc3339());
    }
    for sample in &s.samples {
        let _ = writeln!(out, "  sample:     {sample}");
    }
    if let Some(workflow) = &plan.header.workflow {
        let _ = writeln!(out, "  workflow:   {}", workflow.name);
        for (n, step) in workflow.steps.iter().enumerate() {
            let _ = writeln!(out, "    {}. {step}", n + 1);
        }
        let resets: Vec<String> = workflow.domain_rows.iter().map(|(t, n)| format!("{t} {n}")).collect();
        let _ = writeln!(out, "  domain rows reset: {}", resets.join(", "));
    }
    if let Some(rate) = rate {
        let _ = writeln!(out, "  duration:   about {:.1} s at {rate} events/s", plan.events() as f64 / f64::from(rate));
    }
    for warning in &s.warnings {
        let _ = writeln!(out, "  WARNING:    {warning}");
    }
    out
}

/// "type 3, other 1".
fn counts(map: &BTreeMap<String, usize>) -> String {
    map.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

/// "1 row", "2 rows".
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
