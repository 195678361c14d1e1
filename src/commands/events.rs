//! `replay events show EVENT_ID`: every field of one ledger row, its payload
//! pretty-printed, and its replay history (what each replay erased).

use std::process::ExitCode;

use comfy_table::Table;

use crate::cli::{EventsCommand, EventsListArgs};
use crate::config::Endpoints;
use crate::exit::UsageError;
use crate::replay::selector::{parse_statuses, PayloadField, Selector};
use crate::{store::database, store::ledger};

pub async fn run(endpoints: &Endpoints, command: EventsCommand) -> anyhow::Result<ExitCode> {
    match command {
        EventsCommand::List(args) => list(endpoints, args).await,
        EventsCommand::Show { event_id, json } => show(endpoints, event_id, json).await,
    }
}

/// `replay events list`: the newest rows matching the filters.
async fn list(endpoints: &Endpoints, args: EventsListArgs) -> anyhow::Result<ExitCode> {
    let usage = |e: crate::replay::selector::SelectorError| UsageError(e.to_string());
    let received_from = match args.since {
        Some(since) => Some(
            chrono::Utc::now()
                - chrono::Duration::from_std(since).map_err(|_| UsageError("--since is too long".into()))?,
        ),
        None => None,
    };
    let selector = Selector {
        event_types: args.event_types.clone(),
        statuses: parse_statuses(&args.statuses).map_err(usage)?,
        payload: args.payload.iter().map(|p| PayloadField::parse(p)).collect::<Result<_, _>>().map_err(usage)?,
        limit: Some(args.limit),
        received_from,
        ..Selector::default()
    };
    selector.validate().map_err(usage)?;
    let pool = database::connect(&endpoints.database_url, 2).await?;
    database::check_migrated(&pool, &endpoints.database_url).await?;
    let rows = ledger::select(&pool, &selector, ledger::Order::NewestFirst).await?;
    if args.json {
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new();
    table.set_header(["event id", "type", "status", "retries", "occurred at", "processed at", "error"]);
    for row in &rows {
        table.add_row([
            row.event_id.clone(),
            row.event_type.clone(),
            row.status.to_string(),
            row.retry_count.to_string(),
            row.occurred_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            row.processed_at.map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
            row.error_message.as_deref().map_or("-".into(), |e| e.chars().take(60).collect()),
        ]);
    }
    println!("{table}");
    println!(
        "{} row(s), newest first{}",
        rows.len(),
        if rows.len() as i64 == args.limit { " (--limit reached)" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}

/// `replay events show`.
pub(super) async fn show(endpoints: &Endpoints, event_id: String, json: bool) -> anyhow::Result<ExitCode> {
    let pool = database::connect(&endpoints.database_url, 2).await?;
    database::check_migrated(&pool, &endpoints.database_url).await?;
    let row = ledger::find(&pool, &event_id).await?.ok_or_else(|| {
        UsageError(format!("event '{event_id}' is not in the ledger: check the id (`replay status` lists the ledger)"))
    })?;
    let history = ledger::history(&pool, &event_id).await?;
    if json {
        println!("{}", serde_json::json!({"event": row, "replay_history": history}));
        return Ok(ExitCode::SUCCESS);
    }
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or("-".to_string(), |t| t.to_rfc3339());
    println!("event        {}", row.event_id);
    println!("type         {}", row.event_type);
    println!("status       {}", row.status);
    println!("occurred at  {}", row.occurred_at.to_rfc3339());
    println!("processed at {}", time(row.processed_at));
    println!("retries      {}", row.retry_count);
    println!("error        {}", row.error_message.as_deref().unwrap_or("-"));
    println!("updated at   {}", row.updated_at.to_rfc3339());
    println!("payload\n{}", serde_json::to_string_pretty(&row.payload)?);
    if history.is_empty() {
        println!("replay history: never replayed");
    }
    for h in &history {
        match &h.prior_status {
            Some(status) => println!(
                "replayed {} by {} (plan {}): it was {status}, {} retries, error: {}, processed at {}",
                h.reset_at.to_rfc3339(),
                h.operator,
                h.plan_id,
                h.prior_retry_count.unwrap_or(0),
                h.prior_error.as_deref().unwrap_or("-"),
                time(h.prior_processed_at)
            ),
            None => println!(
                "added {} by {} (plan {}) as a workflow's trigger event",
                h.reset_at.to_rfc3339(),
                h.operator,
                h.plan_id
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}
