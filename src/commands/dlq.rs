//! `replay dlq list|show|report|resolve`: the dead-letter view over both
//! places failures land: ledger rows in `error` (named by event id) and
//! messages that were not events at all (`dead_letters`, named `dl-N`).
//! Reprocessing goes through `replay plan --status error` / `apply`.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use comfy_table::Table;
use serde_json::json;

use crate::cli::DlqCommand;
use crate::config::Endpoints;
use crate::control::resolve::{self, Entry};
use crate::exit::UsageError;
use crate::{store::database, store::dead_letters, store::ledger};

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

pub async fn run(endpoints: &Endpoints, command: DlqCommand) -> anyhow::Result<ExitCode> {
    let pool = database::connect(&endpoints.database_url, 2).await?;
    database::check_migrated(&pool, &endpoints.database_url).await?;
    match command {
        DlqCommand::List { limit, json } => {
            let failed = ledger::unresolved_errors(&pool, limit).await?;
            let letters = dead_letters::unresolved(&pool, limit).await?;
            let held = ledger::held(&pool, limit).await?;
            if json {
                println!("{}", json!({"failed_events": failed, "dead_letters": letters, "held_events": held}));
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new();
            table.set_header(["id", "kind", "type / routing key", "when", "error / reason"]);
            for f in &failed {
                table.add_row([
                    f.event_id.clone(),
                    format!("failed event ({} retries)", f.retry_count),
                    f.event_type.clone(),
                    time(f.failed_at),
                    f.error_message.clone().unwrap_or_default(),
                ]);
            }
            for l in &letters {
                table.add_row([
                    format!("dl-{}", l.id),
                    "unreadable message".into(),
                    l.routing_key.clone(),
                    time(Some(l.received_at)),
                    l.reason.clone(),
                ]);
            }
            for h in &held {
                table.add_row([
                    h.event_id.clone(),
                    "held event".into(),
                    h.event_type.clone(),
                    time(Some(h.since)),
                    format!("held behind {}: applied once that event is", h.held_behind),
                ]);
            }
            println!("{table}");
            println!(
                "{} failed event(s), {} dead-lettered message(s), {} event(s) held behind an earlier one",
                failed.len(),
                letters.len(),
                held.len()
            );
            if !failed.is_empty() {
                println!("next: fix the cause, then `replay plan --status error --reason ...` to reprocess them");
            }
        }
        DlqCommand::Show { id, json } => match Entry::parse(&id) {
            Entry::Letter(n) => {
                let letter = dead_letters::find(&pool, n)
                    .await?
                    .ok_or_else(|| UsageError(format!("no dead letter {id}: `replay dlq list` shows them")))?;
                let body = String::from_utf8_lossy(&letter.body).into_owned();
                if json {
                    println!("{}", json!({"dead_letter": letter, "body": body}));
                } else {
                    println!("dead letter  dl-{}", letter.id);
                    println!("received at  {}", letter.received_at.to_rfc3339());
                    println!("exchange     {}", letter.exchange);
                    println!("routing key  {}", letter.routing_key);
                    println!("message id   {}", letter.message_id.as_deref().unwrap_or("-"));
                    println!("reason       {}", letter.reason);
                    println!("resolved     {}", letter.resolved_note.as_deref().unwrap_or("-"));
                    println!("headers      {}", letter.headers);
                    println!("body ({} bytes)\n{body}", letter.body.len());
                }
            }
            Entry::Event(event_id) => return super::events::show(endpoints, event_id, json).await,
        },
        DlqCommand::Report { hours, json } => {
            let since = Utc::now() - chrono::Duration::hours(hours.max(1));
            let failed = ledger::error_report(&pool, since).await?;
            let letters = dead_letters::report(&pool, since).await?;
            let rows: Vec<serde_json::Value> = failed
                .iter()
                .map(|r| ("failed event", r))
                .chain(letters.iter().map(|r| ("unreadable message", r)))
                .map(|(kind, g)| {
                    json!({"kind": kind, "type": g.what, "error": g.why, "count": g.count, "first_seen": g.first_seen, "last_seen": g.last_seen})
                })
                .collect();
            if json {
                println!("{}", json!({"hours": hours, "groups": rows}));
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new();
            table.set_header(["kind", "type / routing key", "error / reason", "count", "first seen", "last seen"]);
            for (kind, g) in
                failed.iter().map(|r| ("failed event", r)).chain(letters.iter().map(|r| ("unreadable message", r)))
            {
                table.add_row([
                    kind.to_string(),
                    g.what.clone(),
                    g.why.clone(),
                    g.count.to_string(),
                    time(g.first_seen),
                    time(g.last_seen),
                ]);
            }
            println!("{table}");
            println!("over the last {hours} hour(s), unresolved only");
        }
        DlqCommand::Resolve { id, note, operator, json } => {
            if note.trim().is_empty() {
                return Err(UsageError("--note is empty: say what was done about it".into()).into());
            }
            let operator = operator.unwrap_or_else(super::os_user);
            if !resolve::resolve(&pool, &Entry::parse(&id), &id, &note, &operator).await? {
                return Err(
                    UsageError(format!("{id} is not an unresolved DLQ entry: `replay dlq list` shows them")).into()
                );
            }
            if json {
                println!("{}", json!({"id": id, "resolved": true, "note": note}));
            } else {
                println!("{id} resolved (audited); it no longer shows in `replay dlq list`.");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
