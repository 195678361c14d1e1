//! `replay ledger prune`: deletes old processed rows in bounded batches,
//! audited; never touches a row that is not `processed`.

use std::process::ExitCode;

use serde_json::json;

use crate::cli::{LedgerCommand, PruneArgs};
use crate::config::Endpoints;
use crate::control::prune::{self, Prune};
use crate::{store::database, store::ledger};

pub async fn run(endpoints: &Endpoints, command: LedgerCommand) -> anyhow::Result<ExitCode> {
    let LedgerCommand::Prune(args) = command;
    prune(endpoints, args).await
}

async fn prune(endpoints: &Endpoints, args: PruneArgs) -> anyhow::Result<ExitCode> {
    let before = chrono::Utc::now()
        - chrono::Duration::from_std(args.older_than)
            .map_err(|_| crate::exit::UsageError("--older-than is too long".into()))?;
    let pool = database::connect(&endpoints.database_url, 2).await?;
    database::check_migrated(&pool, &endpoints.database_url).await?;
    let candidates = ledger::count_prunable(&pool, before).await?;
    if candidates == 0 {
        if args.json {
            println!("{}", json!({"deleted": 0, "before": before}));
        } else {
            println!("nothing to prune: no processed row was processed before {}.", before.to_rfc3339());
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.yes {
        super::confirm(
            &format!("delete {candidates} processed row(s) processed before {}?", before.to_rfc3339()),
            "pass --yes to prune",
        )?;
    }
    let operator = args.operator.clone().unwrap_or_else(super::os_user);
    let older_than = humantime::format_duration(args.older_than).to_string();
    let deleted =
        prune::run(&pool, &Prune { operator: &operator, before, older_than: &older_than, batch: args.batch }).await?;
    if args.json {
        println!("{}", json!({"deleted": deleted, "before": before}));
    } else {
        println!("pruned {deleted} processed row(s) processed before {} (audited).", before.to_rfc3339());
    }
    Ok(ExitCode::SUCCESS)
}
