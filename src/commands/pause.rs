//! `replay pause` and `replay resume`: the durable pause, audited, and the
//! wait until every live worker reports it stopped taking work.

use std::process::ExitCode;

use serde_json::json;

use crate::cli::{PauseArgs, ResumeArgs};
use crate::config::Endpoints;
use crate::exit::{Refused, UsageError};
use crate::{control::pause, store::database, store::emergency_saved};

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
    // An emergency stop that died after acking what it took off the queue
    // left it saved, not in the ledger: resumed workers would never see it.
    let saved = emergency_saved::waiting(&pool).await?;
    if !saved.is_empty() {
        return Err(Refused(format!(
            "an emergency stop did not finish: {} event(s) and {} unreadable message(s) it took off the queue are saved in replay_control, not yet in the ledger. Run the same `replay emergency-stop` again (it continues and puts them back), then resume",
            saved.events, saved.dead_letters
        ))
        .into());
    }
    let lifted = pause::resume_workers(&pool, &operator, &args.reason).await?;
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
