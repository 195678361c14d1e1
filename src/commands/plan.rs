//! `replay plan`: selects ledger rows (and/or a workflow), shows their blast
//! radius, and writes a sealed plan file. Changes nothing in the database.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::PlanArgs;
use crate::config::Endpoints;
use crate::exit::{Refused, UsageError};
use crate::handlers::Registry;
use crate::replay::plan::{Header, PlanWriter, RowRef, SealedPlan, Trigger, WorkflowPlan};
use crate::replay::selector::{parse_statuses, parse_time, Bound, PayloadField, Selector, TimeRange};
use crate::replay::workflows::{self, Params, WorkflowError};
use crate::{store::database, store::ledger};

/// Sample payloads shown in the summary.
const SAMPLES: i64 = 3;

pub async fn run(endpoints: &Endpoints, args: PlanArgs) -> anyhow::Result<ExitCode> {
    let selector = selector_from(&args).map_err(|e| UsageError(e.to_string()))?;
    if selector.is_none() && args.workflow.is_none() {
        return Err(UsageError(
            "nothing selected: give a selector (--event-id, --type, --from/--to, --processed-from/--processed-to, \
             --status, --payload), a --workflow, or --all for the whole ledger"
                .into(),
        )
        .into());
    }
    if args.reason.trim().is_empty() {
        return Err(UsageError("--reason is empty: say why this replay is needed".into()).into());
    }
    if args.rate == Some(0) {
        return Err(UsageError("--rate must be at least 1 event per second".into()).into());
    }
    let workflow = args.workflow.as_deref().map(workflows::find).transpose().map_err(workflow_error)?;

    let pool = database::connect(&endpoints.database_url, 2).await?;
    database::check_migrated(&pool, &endpoints.database_url).await?;
    let identity = database::identity(&pool).await.context("reading the database's identity")?;
    let mut header = Header::new(
        args.operator.clone().unwrap_or_else(super::os_user),
        args.reason.clone(),
        args.force,
        selector.clone(),
        identity,
    );

    if let Some(workflow) = workflow {
        let mut params = Params::new();
        for (key, value) in [("period", &args.period), ("member", &args.member)] {
            if let Some(value) = value {
                params.insert(key.to_string(), value.clone());
            }
        }
        let mut conn = pool.acquire().await.context("reading the workflow's domain rows")?;
        let inspection = workflow.inspect(&mut conn, &params).await.map_err(workflow_error)?;
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
        header.workflow = Some(WorkflowPlan {
            name: workflow.name().to_string(),
            params: inspection.params,
            steps: inspection.steps,
            domain_rows: inspection.domain_rows,
            fingerprint: inspection.fingerprint,
            triggers,
        });
    }

    let mut writer = PlanWriter::create(&args.out_dir, header)?;
    let mut samples = Vec::new();
    if let Some(selector) = &selector {
        let streamed = ledger::for_each_selected(&pool, selector, |row| -> anyhow::Result<()> {
            let planned = RowRef(row.id, row.event_id, row.event_type, row.status, row.version);
            Ok(writer.push(planned, row.occurred_at)?)
        })
        .await;
        if let Err(error) = streamed {
            writer.abandon();
            return Err(error);
        }
        let first = Selector { limit: Some(selector.limit.map_or(SAMPLES, |l| l.min(SAMPLES))), ..selector.clone() };
        samples = ledger::select(&pool, &first, ledger::Order::EventTime)
            .await?
            .into_iter()
            .map(|r| serde_json::json!({"event_id": r.event_id, "event_type": r.event_type, "payload": r.payload}))
            .collect();
    }
    if writer.rows() == 0 && writer.header().workflow.is_none() {
        writer.abandon();
        if args.json {
            println!(
                "{}",
                serde_json::json!({"plan_id": null, "plan_path": null, "rows": 0, "by_type": {}, "warnings": []})
            );
        } else {
            println!("nothing to replay: no ledger row matches these selectors. No plan was written.");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let plan = writer.seal(samples, &Registry::reference())?;

    if args.json {
        let s = &plan.summary;
        println!(
            "{}",
            serde_json::json!({
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
                "estimated_seconds": args.rate.map(|r| plan.events() as f64 / f64::from(r)),
                "warnings": s.warnings,
                "digest": plan.digest,
            })
        );
    } else {
        print!("{}", human(&plan, args.rate));
        println!("plan written to {}", plan.path.display());
        println!("next: read it, then `replay apply {}`", plan.path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn workflow_error(error: WorkflowError) -> anyhow::Error {
    match error {
        WorkflowError::Usage(message) => UsageError(message).into(),
        WorkflowError::Refused(message) => Refused(message).into(),
        other => other.into(),
    }
}

/// The selector the flags describe, or `None` when no selector flag was given.
fn selector_from(args: &PlanArgs) -> Result<Option<Selector>, crate::replay::selector::SelectorError> {
    let time = |flag, text: &Option<String>, bound| text.as_deref().map(|t| parse_time(flag, t, bound)).transpose();
    let selector = Selector {
        event_ids: args.event_ids.clone(),
        event_types: args.event_types.clone(),
        occurred: TimeRange { from: time("--from", &args.from, Bound::From)?, to: time("--to", &args.to, Bound::To)? },
        processed: TimeRange {
            from: time("--processed-from", &args.processed_from, Bound::From)?,
            to: time("--processed-to", &args.processed_to, Bound::To)?,
        },
        statuses: parse_statuses(&args.statuses)?,
        payload: args.payload.iter().map(|p| PayloadField::parse(p)).collect::<Result<_, _>>()?,
        limit: args.limit,
        received_from: None,
    };
    selector.validate()?;
    let everything = Selector { limit: selector.limit, ..Selector::default() };
    Ok((args.all || selector != everything).then_some(selector))
}

fn counts(map: &std::collections::BTreeMap<String, usize>) -> String {
    map.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

/// The five-second read.
pub(super) fn human(plan: &SealedPlan, rate: Option<u32>) -> String {
    let s = &plan.summary;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plan {}: {} to replay, {} to publish (reason: {})",
        plan.header.plan_id,
        super::count(s.rows, "row"),
        super::count(plan.events(), "event"),
        plan.header.reason
    );
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
