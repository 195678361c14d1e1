//! `replay events show EVENT_ID`: every field of one ledger row, its payload
//! pretty-printed, and its replay history (what each replay erased).

use std::process::ExitCode;

use crate::cli::EventsCommand;
use crate::config::Endpoints;
use crate::exit::UsageError;
use crate::{database, ledger};

pub async fn run(endpoints: &Endpoints, command: EventsCommand) -> anyhow::Result<ExitCode> {
    let EventsCommand::Show { event_id, json } = command;
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
