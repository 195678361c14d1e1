//! `replay rehearse PLAN`: the plan run on a scratch copy of the database,
//! with sandboxed handlers and no broker; prints what it would change.
//! The flags become a [`rehearse::Request`]; `replay::rehearse` does the rest.

use std::process::ExitCode;

use crate::cli::RehearseArgs;
use crate::config::{Endpoints, SecretUrl};
use crate::exit::Refused;
use crate::handlers::Registry;
use crate::replay::plan::SealedPlan;
use crate::replay::rehearse::{self, RehearsalError};
use crate::store::database;

pub async fn run(endpoints: &Endpoints, args: RehearseArgs, handlers: Registry) -> anyhow::Result<ExitCode> {
    let plan = SealedPlan::open(&args.plan)?;
    let pool = database::connect(&endpoints.database_url, 2).await?;
    database::check_migrated(&pool, &endpoints.database_url).await?;
    let request = rehearse::Request {
        operator: args.operator.clone().unwrap_or_else(super::os_user),
        keep: args.keep,
        dump_dir: std::env::temp_dir(),
        server: args.rehearsal_url.clone().map(SecretUrl::new),
    };
    let rehearsal =
        rehearse::rehearse(&pool, &endpoints.database_url, &plan, &handlers, &request).await.map_err(|error| {
            match error {
                RehearsalError::OtherDatabase { .. }
                | RehearsalError::Unsandboxed(_)
                | RehearsalError::Destination(_) => Refused(error.to_string()).into(),
                other => anyhow::Error::from(other),
            }
        })?;
    if args.json {
        println!("{}", rehearse::json(&rehearsal));
    } else {
        print!("{}", rehearse::human(&rehearsal));
    }
    Ok(ExitCode::SUCCESS)
}
