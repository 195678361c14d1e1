//! `/dlq`: what failed, grouped by event type and error
//! (`ledger::error_report`, `dead_letters::report`), each group of failed
//! events with "plan a replay of this group" (a plan made by
//! `replay::planning`, shown on its page before anything is applied), and
//! each unresolved entry with a resolve form (`control::resolve`).

use axum::extract::{Path, Query, State};
use axum::response::Response;
use chrono::Utc;
use maud::{html, Markup};
use serde::Deserialize;

use super::{csrf, layout, maybe_time, see, time, PageError};
use crate::console::filters::page_size;
use crate::console::session::Posted;
use crate::console::{reason, ApiError, Console, Visitor};
use crate::control::resolve::{self, Entry};
use crate::replay::planning::{self, PlanRequest, Planned};
use crate::replay::selector::SelectorInput;
use crate::store::tokens::Role;
use crate::store::{dead_letters, ledger, ReportGroup};

#[derive(Debug, Default, Deserialize)]
pub(super) struct Window {
    hours: Option<i64>,
}

pub(super) async fn page(
    visitor: Visitor,
    State(console): State<Console>,
    Query(Window { hours }): Query<Window>,
) -> Result<Markup, PageError> {
    let hours = hours.unwrap_or(24).max(1);
    let since = Utc::now() - chrono::Duration::hours(hours);
    let pool = console.pool();
    let failed_groups = ledger::error_report(pool, since).await?;
    let letter_groups = dead_letters::report(pool, since).await?;
    let failed = ledger::unresolved_errors(pool, page_size(None)).await?;
    let letters = dead_letters::unresolved(pool, page_size(None)).await?;
    let held = ledger::held(pool, page_size(None)).await?;
    let operator = visitor.may(Role::Operator);
    let body = html! {
        h1 { "Dead letters" }
        form.inline method="get" action="/dlq" {
            label { "groups of the last " input name="hours" size="4" value=(hours); " hours" }
            button type="submit" { "Show" }
        }
        h2 { "Failed events by type and error" }
        table #failed-groups {
            tr { th { "type" } th { "error" } th.num { "count" } th { "first" } th { "last" } @if operator { th { "replay" } } }
            @for g in &failed_groups {
                tr.group {
                    (group_cells(g))
                    @if operator {
                        td {
                            form.inline method="post" action="/dlq/plan" {
                                (csrf(&visitor))
                                input type="hidden" name="type" value=(g.what);
                                input name="reason" size="28" value={ "replay failed " (g.what) " events" } aria-label="reason";
                                button type="submit" { "Plan a replay of this group" }
                            }
                            span.muted { "every failed " (g.what) " event; the plan page shows them before anything is applied" }
                            form.inline.resolve-group method="post" action="/dlq/resolve-group" {
                                (csrf(&visitor))
                                input type="hidden" name="type" value=(g.what);
                                input type="hidden" name="error" value=(g.why);
                                input name="note" size="24" placeholder="what was done about them" aria-label="note";
                                button type="submit" { "Resolve all " (g.count) }
                            }
                        }
                    }
                }
            }
            @if failed_groups.is_empty() { tr { td colspan="6" .muted { "no failed event in this window" } } }
        }
        h2 { "Unreadable messages by routing key and reason" }
        table #letter-groups {
            tr { th { "routing key" } th { "reason" } th.num { "count" } th { "first" } th { "last" } }
            @for g in &letter_groups { tr.group { (group_cells(g)) } }
            @if letter_groups.is_empty() { tr { td colspan="5" .muted { "no dead-lettered message in this window" } } }
        }
        h2 { "Unresolved failed events" }
        table #failed-events {
            tr { th { "event" } th { "type" } th { "error" } th.num { "retries" } th { "failed at" } @if operator { th { "resolve" } } }
            @for e in &failed {
                tr data-entry=(e.event_id) {
                    td { a href={ "/events/" (super::segment(&e.event_id)) } { (e.event_id) } }
                    td { (e.event_type) } td { (e.error_message.as_deref().unwrap_or("")) }
                    td.num { (e.retry_count) } td { (maybe_time(&e.failed_at)) }
                    @if operator { td { (resolve_form(&visitor, &e.event_id)) } }
                }
            }
            @if failed.is_empty() { tr { td colspan="6" .muted { "none" } } }
        }
        h2 { "Held events" }
        p.muted { "each waits for an earlier event of its sequence key that failed; it is applied once that one is (replayed or resolved)" }
        table #held-events {
            tr { th { "event" } th { "type" } th { "sequence key" } th { "held behind" } th { "since" } }
            @for h in &held {
                tr data-entry=(h.event_id) {
                    td { a href={ "/events/" (super::segment(&h.event_id)) } { (h.event_id) } }
                    td { (h.event_type) } td { (h.sequence_key.as_deref().unwrap_or("")) }
                    td { a href={ "/events/" (super::segment(&h.held_behind)) } { (h.held_behind) } }
                    td { (time(&h.since)) }
                }
            }
            @if held.is_empty() { tr { td colspan="5" .muted { "none" } } }
        }
        h2 { "Unresolved dead-lettered messages" }
        table #dead-letters {
            tr { th { "id" } th { "received" } th { "routing key" } th { "reason" } th { "body" } @if operator { th { "resolve" } } }
            @for l in &letters {
                @let id = format!("dl-{}", l.id);
                tr data-entry=(id) {
                    td { (id) } td { (time(&l.received_at)) } td { (l.routing_key) } td { (l.reason) }
                    td { code { (String::from_utf8_lossy(&l.body).chars().take(120).collect::<String>()) } }
                    @if operator { td { (resolve_form(&visitor, &id)) } }
                }
            }
            @if letters.is_empty() { tr { td colspan="6" .muted { "none" } } }
        }
    };
    Ok(layout::render(&console, &visitor, "/dlq", "Dead letters", body).await)
}

fn group_cells(g: &ReportGroup) -> Markup {
    html! {
        td { (g.what) } td { (g.why) } td.num { (g.count) } td { (maybe_time(&g.first_seen)) } td { (maybe_time(&g.last_seen)) }
    }
}

fn resolve_form(visitor: &Visitor, id: &str) -> Markup {
    html! {
        form.inline method="post" action={ "/dlq/" (super::segment(id)) "/resolve" } {
            (csrf(visitor))
            input name="note" size="24" placeholder="what was done about it" aria-label="note" required;
            button type="submit" { "Resolve" }
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct GroupPlan {
    #[serde(rename = "type", default)]
    event_type: String,
    #[serde(default)]
    reason: String,
}

/// `POST /dlq/plan` (operator): a plan of every failed event of one type,
/// made as `replay plan --status error --type TYPE` makes it; its page
/// shows what it would replay.
pub(super) async fn plan_group(
    State(console): State<Console>,
    posted: Posted<GroupPlan>,
) -> Result<Response, PageError> {
    let Posted { visitor, form } = posted;
    visitor.require(Role::Operator)?;
    let input = SelectorInput {
        types: vec![form.event_type.clone()],
        statuses: vec!["error".to_string()],
        ..SelectorInput::default()
    };
    let selector = input.selector().map_err(|e| ApiError::bad_request(e.to_string()))?;
    let request = PlanRequest {
        selector,
        workflow: None,
        period: None,
        member: None,
        operator: visitor.name.clone(),
        reason: reason(&form.reason, "this group is replayed")?,
        force: false,
        rate: None,
        out_dir: console.settings().plan_dir.clone(),
        destination: None,
    };
    match planning::make(console.pool(), &request).await? {
        Planned::Written(plan) => Ok(see(&format!("/plans/{}", plan.header.plan_id))),
        Planned::Nothing => Err(ApiError::not_found(format!(
            "no failed {} event is left to replay: nothing was planned",
            form.event_type
        ))
        .into()),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct GroupNote {
    #[serde(rename = "type")]
    event_type: String,
    error: String,
    #[serde(default)]
    note: String,
}

/// `POST /dlq/resolve-group` (operator): every unresolved failed event of
/// the group resolved with the note, however many (not only those shown),
/// audited once under the visitor's token name.
pub(super) async fn resolve_group(
    State(console): State<Console>,
    posted: Posted<GroupNote>,
) -> Result<Response, PageError> {
    let Posted { visitor, form } = posted;
    visitor.require(Role::Operator)?;
    let note = form.note.trim();
    if note.is_empty() {
        return Err(ApiError::bad_request("note is empty: say what was done about them").into());
    }
    if resolve::resolve_group(console.pool(), &form.event_type, &form.error, note, &visitor.name).await? == 0 {
        return Err(
            ApiError::not_found("no unresolved failed event is left in this group: the DLQ page lists them").into()
        );
    }
    Ok(see("/dlq"))
}

#[derive(Debug, Deserialize)]
pub(super) struct Note {
    #[serde(default)]
    note: String,
}

/// `POST /dlq/{id}/resolve` (operator): the entry resolved with the note,
/// audited under the visitor's token name.
pub(super) async fn resolve(
    State(console): State<Console>,
    Path(id): Path<String>,
    posted: Posted<Note>,
) -> Result<Response, PageError> {
    let Posted { visitor, form } = posted;
    visitor.require(Role::Operator)?;
    let note = form.note.trim();
    if note.is_empty() {
        return Err(ApiError::bad_request("note is empty: say what was done about it").into());
    }
    if !resolve::resolve(console.pool(), &Entry::parse(&id), &id, note, &visitor.name).await? {
        return Err(ApiError::not_found(format!("{id} is not an unresolved DLQ entry: the DLQ page lists them")).into());
    }
    Ok(see("/dlq"))
}
