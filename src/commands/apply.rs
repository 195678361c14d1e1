//! `replay apply PLAN`: checks the plan, asks (or takes `--yes`), then backs
//! up, resets and republishes, with a progress bar on a terminal.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::cli::ApplyArgs;
use crate::config::Endpoints;
use crate::replay::apply::{self, BackupSource, Progress, Request};
use crate::store::database;

pub async fn run(endpoints: &Endpoints, args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let request = Request {
        operator: args.operator.clone().unwrap_or_else(super::os_user),
        allow_external_effects: args.allow_external_effects,
        backup: match &args.backup {
            Some(path) => BackupSource::Existing { path: path.clone(), max_age: args.backup_max_age },
            None => BackupSource::Fresh { dir: args.backup_dir.clone() },
        },
        rate: args.rate,
    };
    let pool = database::connect(&endpoints.database_url, 4).await?;
    database::check_migrated(&pool, &endpoints.database_url).await?;
    let checked = apply::check(&pool, &args.plan, &request).await?;
    let plan = &checked.plan;
    let path = plan.path.display().to_string();

    if checked.is_done() {
        let run = checked.run.as_ref();
        let finished = run.and_then(|r| r.finished_at).map_or("?".to_string(), |t| t.to_rfc3339());
        if args.json {
            println!(
                "{}",
                serde_json::json!({"plan_id": plan.header.plan_id, "already_applied": true, "finished_at": finished})
            );
        } else {
            println!("plan {} was already applied (finished {finished}): nothing to do.", plan.header.plan_id);
            println!("next: `replay status {path}` shows how its events were processed");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.dry_run {
        let action = if checked.run.is_some() { "resume publishing" } else { "back up, reset and republish" };
        if args.json {
            println!(
                "{}",
                serde_json::json!({"plan_id": plan.header.plan_id, "dry_run": true, "checks": "passed", "events": plan.events(), "would": action})
            );
        } else {
            print!("{}", super::plan::human(plan, args.rate));
            println!("dry run: every check passed (intact, this database, current, not paused, no other apply); nothing was changed.");
            println!("next: `replay apply {path}` would {action} {} events", plan.events());
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.yes {
        confirm(&super::plan::human(plan, args.rate), &checked)?;
    }

    let shutdown = CancellationToken::new();
    super::spawn_signal_listener(shutdown.clone())?;
    let bar = progress_bar(plan.events() as u64, args.json);
    let mut last_line = Instant::now();
    let outcome = apply::execute(&pool, endpoints, checked, &request, &shutdown, |p: Progress| {
        bar.set_position(p.published);
        // Without a terminal, a plain line every few seconds instead of a bar.
        if bar.is_hidden() && !args.json && (last_line.elapsed() > Duration::from_secs(5) || p.published == p.total) {
            eprintln!("published {} of {} events", p.published, p.total);
            last_line = Instant::now();
        }
    })
    .await;
    bar.finish_and_clear();
    let outcome = outcome?;
    if args.json {
        println!("{}", serde_json::to_string(&outcome)?);
    } else {
        let resumed = if outcome.resumed { " (resumed)" } else { "" };
        match &outcome.broker_error {
            None => println!(
                "applied plan {}{resumed}: {} of {} events published and confirmed in {:.1} s",
                outcome.plan_id, outcome.published_now, outcome.events, outcome.seconds
            ),
            Some(error) => {
                println!(
                    "applied plan {}{resumed}, with RabbitMQ failing mid-way ({error}): {} of {} events published and confirmed, {} handed to the outbox in {:.1} s",
                    outcome.plan_id, outcome.published_now, outcome.events, outcome.kept_in_outbox, outcome.seconds
                );
                println!(
                    "  outbox:     the workers publish those {} when RabbitMQ is back (unpaced: --rate does not carry over)",
                    outcome.kept_in_outbox
                );
            }
        }
        println!("  backup:     {}", outcome.backup_path);
        println!("  audit:      entry {}", outcome.audit_id);
        println!("next: `replay status {path} --watch` follows the workers processing them");
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks on the terminal; refuses when there is none.
fn confirm(summary: &str, checked: &apply::Checked) -> anyhow::Result<()> {
    let action = if checked.run.is_some() { "resume publishing" } else { "back up, reset and republish" };
    super::confirm(
        &format!("{summary}{action} {} events now?", checked.plan.events()),
        "read the plan, then pass --yes to apply it",
    )
}

fn progress_bar(total: u64, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} events  {per_sec}  eta {eta}") {
        bar.set_style(style);
    }
    bar
}
