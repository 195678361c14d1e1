//! `replay plan`: selects ledger rows (and/or a workflow), shows their blast
//! radius, and writes a sealed plan file. Changes nothing in the database.
//! The flags become a [`PlanRequest`]; `replay::planning` does the rest.

use std::process::ExitCode;

use crate::cli::PlanArgs;
use crate::config::Endpoints;
use crate::exit::{Refused, UsageError};
use crate::replay::planning::{self, PlanRequest, Planned, PlanningError};
use crate::replay::selector::{Selector, SelectorError, SelectorInput};
use crate::store::database;

pub async fn run(endpoints: &Endpoints, args: PlanArgs) -> anyhow::Result<ExitCode> {
    let selector = selector_from(&args).map_err(|e| UsageError(e.to_string()))?;
    let request = PlanRequest {
        selector,
        workflow: args.workflow.clone(),
        period: args.period.clone(),
        member: args.member.clone(),
        operator: args.operator.clone().unwrap_or_else(super::os_user),
        reason: args.reason.clone(),
        force: args.force,
        rate: args.rate,
        out_dir: args.out_dir.clone(),
        destination: match &args.destination {
            Some(text) => Some(text.parse().map_err(UsageError)?),
            None => None,
        },
    };
    // A usage error is reported before connecting, as it needs no database.
    request.validate().map_err(planning_error)?;

    let pool = database::connect(&endpoints.database_url, 2).await?;
    database::check_migrated(&pool, &endpoints.database_url).await?;
    match planning::make(&pool, &request).await.map_err(planning_error)? {
        Planned::Nothing if args.json => println!("{}", planning::nothing_json()),
        Planned::Nothing => println!("{}", planning::NOTHING_TO_REPLAY),
        Planned::Written(plan) if args.json => println!("{}", planning::summary_json(&plan, args.rate)),
        Planned::Written(plan) => {
            print!("{}", planning::human(&plan, args.rate));
            println!("plan written to {}", plan.path.display());
            println!("next: read it, then `replay apply {}`", plan.path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A planning error as the CLI reports it: usage exits 2, a refusal 3.
fn planning_error(error: PlanningError) -> anyhow::Error {
    match error {
        PlanningError::Usage(message) => UsageError(message).into(),
        PlanningError::Refused(message) => Refused(message).into(),
        other => other.into(),
    }
}

/// The selector the flags describe, or `None` when no selector flag was given.
fn selector_from(args: &PlanArgs) -> Result<Option<Selector>, SelectorError> {
    SelectorInput {
        event_ids: args.event_ids.clone(),
        types: args.event_types.clone(),
        statuses: args.statuses.clone(),
        from: args.from.clone(),
        to: args.to.clone(),
        processed_from: args.processed_from.clone(),
        processed_to: args.processed_to.clone(),
        payload: args.payload.clone(),
        limit: args.limit,
        all: args.all,
    }
    .selector()
}
