//! `/events`: the ledger browser (the API's filters, read by
//! `console::filters`, and its keyset pages) and `/events/{event_id}`: every
//! ledger field, the payload pretty-printed, and the event's replay history.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};

use super::{layout, maybe_time, segment, status_label, time, PageError};
use crate::console::filters::EventFilters;
use crate::console::{ApiError, Console, Visitor};
use crate::store::ledger::{self, LedgerRow};

pub(super) async fn list(
    visitor: Visitor,
    State(console): State<Console>,
    Query(filters): Query<EventFilters>,
) -> Result<Response, PageError> {
    let (rows, error) = match filters.page(console.pool()).await {
        Ok(page) => {
            let older = page.next.map(|next| older_link(&filters, next));
            (Some((page.rows, older)), None)
        }
        Err(error) if error.status == StatusCode::BAD_REQUEST => (None, Some(error)),
        Err(error) => return Err(error.into()),
    };
    let body = html! {
        h1 { "Events" }
        (filter_form(&filters))
        @if let Some(error) = &error { p.error #filter-error role="alert" { (error.message) } }
        @if let Some((rows, older)) = &rows {
            table #events {
                tr { th.num { "id" } th { "event id" } th { "type" } th { "status" } th { "occurred" } th { "processed" } th.num { "retries" } th { "error" } }
                @for row in rows {
                    tr {
                        td.num { (row.id) }
                        td { a href={ "/events/" (segment(&row.event_id)) } { (row.event_id) } }
                        td { (row.event_type) } td { (status_label(row.status.as_str())) }
                        td { (time(&row.occurred_at)) } td { (maybe_time(&row.processed_at)) }
                        td.num { (row.retry_count) } td { (row.error_message.as_deref().unwrap_or("")) }
                    }
                }
                @if rows.is_empty() { tr { td colspan="8" .muted { "no event matches these filters" } } }
            }
            @if let Some(older) = older { p { a #older href=(older) { "Older →" } } }
        }
    };
    let page = layout::render(&console, &visitor, "/events", "Events", body).await;
    let status = if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    Ok((status, page).into_response())
}

fn filter_form(f: &EventFilters) -> Markup {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    html! {
        form.inline #filters method="get" action="/events" {
            label { "status " input name="status" size="12" placeholder="error,pending" value=(value(&f.status)); }
            label { "type " input name="type" size="22" placeholder="contribution.submitted" value=(value(&f.event_type)); }
            label { "from " input name="from" size="18" placeholder="2026-01-01 or 2h" value=(value(&f.from)); }
            label { "to " input name="to" size="18" value=(value(&f.to)); }
            label { "payload " input name="payload" size="22" placeholder="KEY=VALUE" value=(value(&f.payload)); }
            button type="submit" { "Filter" }
            a href="/events" { "clear" }
        }
    }
}

/// The same filters, one page further back.
fn older_link(f: &EventFilters, after: i64) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in
        [("status", &f.status), ("type", &f.event_type), ("from", &f.from), ("to", &f.to), ("payload", &f.payload)]
    {
        if let Some(value) = value.as_deref().filter(|v| !v.trim().is_empty()) {
            query.append_pair(name, value);
        }
    }
    if let Some(limit) = f.limit {
        query.append_pair("limit", &limit.to_string());
    }
    query.append_pair("after", &after.to_string());
    format!("/events?{}", query.finish())
}

pub(super) async fn event(
    visitor: Visitor,
    State(console): State<Console>,
    Path(event_id): Path<String>,
) -> Result<Markup, PageError> {
    let Some(row) = ledger::find(console.pool(), &event_id).await? else {
        return Err(ApiError::not_found(format!(
            "event '{event_id}' is not in the ledger: check the id (the events page lists the ledger)"
        ))
        .into());
    };
    let history = ledger::history(console.pool(), &event_id).await?;
    let body = html! {
        h1 { "Event " code { (row.event_id) } }
        (fields(&row))
        h2 { "Payload" }
        pre #payload { (serde_json::to_string_pretty(&row.payload).unwrap_or_else(|_| row.payload.to_string())) }
        h2 { "Replay history" }
        table #history {
            tr { th { "plan" } th { "by" } th { "reset at" } th { "status before" } th { "error before" } th.num { "retries before" } th { "processed before" } }
            @for h in &history {
                tr {
                    td { a href={ "/plans/" (h.plan_id) } { (h.plan_id) } } td { (h.operator) } td { (time(&h.reset_at)) }
                    td { (h.prior_status.as_deref().unwrap_or("(added by a workflow)")) }
                    td { (h.prior_error.as_deref().unwrap_or("")) }
                    td.num { (h.prior_retry_count.map(|n| n.to_string()).unwrap_or_default()) }
                    td { (maybe_time(&h.prior_processed_at)) }
                }
            }
            @if history.is_empty() { tr { td colspan="7" .muted { "never replayed" } } }
        }
    };
    Ok(layout::render(&console, &visitor, "/events", &format!("Event {}", row.event_id), body).await)
}

fn fields(row: &LedgerRow) -> Markup {
    html! {
        dl.fields #fields {
            dt { "ledger id" } dd { (row.id) }
            dt { "event id" } dd { (row.event_id) }
            dt { "type" } dd { (row.event_type) }
            dt { "status" } dd { (status_label(row.status.as_str())) }
            dt { "occurred at" } dd { (time(&row.occurred_at)) }
            dt { "processed at" } dd { (maybe_time(&row.processed_at)) }
            dt { "updated at" } dd { (time(&row.updated_at)) }
            dt { "retries" } dd { (row.retry_count) }
            dt { "error" } dd { (row.error_message.as_deref().unwrap_or("—")) }
        }
    }
}
