//! `replay plan`: selects ledger rows, shows their blast radius, and writes a
//! sealed plan file. Changes nothing in the database.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::PlanArgs;
use crate::config::Endpoints;
use crate::exit::UsageError;
use crate::handlers::Registry;
use crate::plan::{Plan, Request};
use crate::selector::{parse_time, Bound, PayloadField, Selector, TimeRange};
use crate::{database, ledger};

pub async fn run(endpoints: &Endpoints, args: PlanArgs) -> anyhow::Result<ExitCode> {
    let selector = selector_from(&args).map_err(|e| UsageError(e.to_string()))?;
    if args.reason.trim().is_empty() {
        return Err(UsageError("--reason is empty: say why this replay is needed".into()).into());
    }
    if args.rate == Some(0) {
        return Err(UsageError("--rate must be at least 1 event per second".into()).into());
    }
    let pool = database::connect(&endpoints.database_url, 2).await?;
    database::check_migrated(&pool, &endpoints.database_url).await?;
    let rows = ledger::select(&pool, &selector).await?;
    let identity = database::identity(&pool).await.context("reading the database's identity")?;

    if rows.is_empty() {
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

    let request = Request {
        reason: args.reason.clone(),
        created_by: args.operator.clone().unwrap_or_else(os_user),
        force: args.force,
        selector,
        database: identity,
    };
    let plan = Plan::build(request, &rows, &Registry::reference());
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating the plan directory {}", args.out_dir.display()))?;
    let path = plan.path_in(&args.out_dir);
    let text = serde_json::to_string_pretty(&plan).context("serializing the plan")?;
    std::fs::write(&path, text).with_context(|| format!("writing the plan to {}", path.display()))?;

    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "plan_id": plan.plan_id,
                "plan_path": path,
                "rows": plan.summary.rows,
                "by_type": plan.summary.by_type,
                "by_status": plan.summary.by_status,
                "by_day": plan.summary.by_day,
                "first_occurred_at": plan.summary.first_occurred_at,
                "last_occurred_at": plan.summary.last_occurred_at,
                "estimated_seconds": args.rate.map(|r| plan.summary.rows as f64 / f64::from(r)),
                "warnings": plan.warnings,
                "digest": plan.digest,
            })
        );
    } else {
        print!("{}", human(&plan, args.rate));
        println!("plan written to {}", path.display());
        println!("next: read it; `replay apply` is not part of this build yet");
    }
    Ok(ExitCode::SUCCESS)
}

fn selector_from(args: &PlanArgs) -> Result<Selector, crate::selector::SelectorError> {
    let time = |flag, text: &Option<String>, bound| text.as_deref().map(|t| parse_time(flag, t, bound)).transpose();
    let selector = Selector {
        event_ids: args.event_ids.clone(),
        event_types: args.event_types.clone(),
        occurred: TimeRange { from: time("--from", &args.from, Bound::From)?, to: time("--to", &args.to, Bound::To)? },
        processed: TimeRange {
            from: time("--processed-from", &args.processed_from, Bound::From)?,
            to: time("--processed-to", &args.processed_to, Bound::To)?,
        },
        statuses: args.statuses.clone(),
        payload: args.payload.iter().map(|p| PayloadField::parse(p)).collect::<Result<_, _>>()?,
        limit: args.limit,
    };
    selector.validate()?;
    Ok(selector)
}

fn os_user() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".to_string())
}

fn counts(map: &std::collections::BTreeMap<String, usize>) -> String {
    map.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

/// The five-second read.
fn human(plan: &Plan, rate: Option<u32>) -> String {
    let s = &plan.summary;
    let mut out = String::new();
    let _ = writeln!(out, "plan {}: {} rows to replay (reason: {})", plan.plan_id, s.rows, plan.reason);
    let _ = writeln!(out, "  by type:    {}", counts(&s.by_type));
    let _ = writeln!(out, "  by status:  {}", counts(&s.by_status));
    let _ = writeln!(out, "  by day:     {}", counts(&s.by_day));
    if let (Some(first), Some(last)) = (s.first_occurred_at, s.last_occurred_at) {
        let _ = writeln!(out, "  time span:  {} .. {}", first.to_rfc3339(), last.to_rfc3339());
    }
    for sample in &s.samples {
        let _ = writeln!(out, "  sample:     {sample}");
    }
    if let Some(rate) = rate {
        let _ = writeln!(out, "  duration:   about {:.1} s at {rate} events/s", s.rows as f64 / f64::from(rate));
    }
    for warning in &plan.warnings {
        let _ = writeln!(out, "  WARNING:    {warning}");
    }
    out
}
