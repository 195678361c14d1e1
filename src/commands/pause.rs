//! `replay pause` and `replay resume`: the durable pause, audited, and the
//! wait until every live worker reports it stopped taking work.

use std::process::ExitCode;

use serde_json::json;

use crate::cli::{PauseArgs, ResumeArgs};
use crate::config::Endpoints;
use crate::control::pause::{self, ResumeError};
use crate::exit::{Refused, UsageError};
use crate::store::database;

pub async fn pause(endpoints: &Endpoints, args: PauseArgs) -> anyhow::Result<ExitCode> {
    if args.reason.trim().is_empty() {
        return Err(UsageError("--reason is empty: say why the workers are paused".into()).into());
    }
    let operator = args.operator.clone().unwrap_or_else(super::os_user);
    let pool = database::connect(&endpoints.database_url, 2).await?;
    database::check_migrated(&pool, &endpoints.database_url).await?;
    let paused = pause::pause_workers(&pool, &operator, &args.reason, args.wait).await?;
    if args.json {
        println!("{}", serde_json::to_string(&paused)?);
    } else {
        if paused.already_paused {
            if let Some(p) = &paused.pause {
                println!("already paused since {} by {} ({}).", p.paused_at.to_rfc3339(), p.operator, p.reason);
            }
        }
        println!(
            "{} worker(s) paused in {} ms: {}",
            paused.workers_paused.len(),
            paused.latency_ms,
            paused.workers_paused.join(", ")
        );
        if !paused.workers_not_heard_from.is_empty() {
            println!(
                "not waited for (no heartbeat for {} s): {}",
                pause::LIVE_WITHIN.as_secs(),
                paused.workers_not_heard_from.join(", ")
            );
        }
    }
    if !paused.workers_still_running.is_empty() {
        anyhow::bail!(
            "the pause is in force, but {} worker(s) still report running after {}: {}. Check their logs and their connection to the database",
            paused.workers_still_running.len(),
            humantime::format_duration(args.wait),
            paused.workers_still_running.join(", ")
        );
    }
    if !args.json {
        println!("next: `replay resume --reason ...` when it is safe to process again");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn resume(endpoints: &Endpoints, args: ResumeArgs) -> anyhow::Result<ExitCode> {
    if args.reason.trim().is_empty() {
        return Err(UsageError("--reason is empty: say why the workers may resume".into()).into());
    }
    let operator = args.operator.clone().unwrap_or_else(super::os_user);
    let pool = database::connect(&endpoints.database_url, 2).await?;
    database::check_migrated(&pool, &endpoints.database_url).await?;
    let lifted = match pause::resume_workers(&pool, &operator, &args.reason).await {
        Ok(lifted) => lifted,
        Err(error @ ResumeError::StopUnfinished { .. }) => return Err(Refused(error.to_string()).into()),
        Err(ResumeError::Store(error)) => return Err(error.into()),
    };
    if args.json {
        println!("{}", json!({"resumed": lifted.is_some(), "lifted": lifted}));
    } else if let Some(p) = lifted {
        println!(
            "resumed: the pause of {} by {} ({}) is lifted; workers take work again within a second.",
            p.paused_at.to_rfc3339(),
            p.operator,
            p.reason
        );
    } else {
        println!("not paused: nothing to resume.");
    }
    Ok(ExitCode::SUCCESS)
}
