//! `replay pause` and `replay resume`: the durable pause, audited, and the
//! wait until every live worker reports it stopped taking work.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::audit::{self, AuditEntry};
use crate::cli::{PauseArgs, ResumeArgs};
use crate::config::Endpoints;
use crate::exit::UsageError;
use crate::{database, heartbeats, pause as pausing};

/// A worker whose heartbeat is older than this is not waited for.
const LIVE_WITHIN: Duration = Duration::from_secs(5);

pub async fn pause(endpoints: &Endpoints, args: PauseArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    if args.reason.trim().is_empty() {
        return Err(UsageError("--reason is empty: say why the workers are paused".into()).into());
    }
    let operator = args.operator.clone().unwrap_or_else(super::os_user);
    let pool = database::connect(&endpoints.database_url, 2).await?;
    database::check_migrated(&pool, &endpoints.database_url).await?;
    let mut tx = pool.begin().await.context("pausing")?;
    let set = pausing::set(&mut tx, &operator, &args.reason).await.context("pausing")?;
    if set.is_some() {
        let entry = AuditEntry {
            operator: operator.clone(),
            action: "workers.pause".into(),
            details: json!({"reason": args.reason}),
        };
        audit::append(&mut tx, &entry).await?;
    }
    tx.commit().await.context("pausing")?;
    let pause = pausing::current(&pool).await.context("reading the pause")?;

    // Wait until every live worker reports paused, or the bound.
    let (live, stale) = loop {
        let (live, stale) = heartbeats::live_and_stale(&pool, LIVE_WITHIN).await.context("reading heartbeats")?;
        if live.iter().all(|h| h.state == "paused") || started.elapsed() >= args.wait {
            break (live, stale);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let latency = started.elapsed();
    let running: Vec<&str> = live.iter().filter(|h| h.state != "paused").map(|h| h.worker_id.as_str()).collect();
    let paused: Vec<&str> = live.iter().filter(|h| h.state == "paused").map(|h| h.worker_id.as_str()).collect();
    let quiet: Vec<String> = stale
        .iter()
        .map(|h| format!("{} on {} (last seen {})", h.worker_id, h.host, h.last_seen.to_rfc3339()))
        .collect();
    if args.json {
        println!(
            "{}",
            json!({
                "paused": pause,
                "already_paused": set.is_none(),
                "workers_paused": paused,
                "workers_still_running": running,
                "workers_not_heard_from": quiet,
                "latency_ms": latency.as_millis() as u64,
            })
        );
    } else {
        if set.is_none() {
            if let Some(p) = &pause {
                println!("already paused since {} by {} ({}).", p.paused_at.to_rfc3339(), p.operator, p.reason);
            }
        }
        println!("{} worker(s) paused in {} ms: {}", paused.len(), latency.as_millis(), paused.join(", "));
        if !quiet.is_empty() {
            println!("not waited for (no heartbeat for {} s): {}", LIVE_WITHIN.as_secs(), quiet.join(", "));
        }
    }
    if !running.is_empty() {
        anyhow::bail!(
            "the pause is in force, but {} worker(s) still report running after {}: {}. Check their logs and their connection to the database",
            running.len(),
            humantime::format_duration(args.wait),
            running.join(", ")
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
    let mut tx = pool.begin().await.context("resuming")?;
    let lifted = pausing::lift(&mut tx).await.context("resuming")?;
    if let Some(p) = &lifted {
        let entry = AuditEntry {
            operator: operator.clone(),
            action: "workers.resume".into(),
            details: json!({"reason": args.reason, "paused_at": p.paused_at, "paused_by": p.operator, "pause_reason": p.reason}),
        };
        audit::append(&mut tx, &entry).await?;
    }
    tx.commit().await.context("resuming")?;
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
