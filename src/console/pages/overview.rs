//! `/`: the system at a glance — ledger by status, queue depth, lag, DLQ,
//! workers and their heartbeats (`worker::health::SystemView`, as the API's
//! overview and the worker's `/health/detailed` show it), and two bar
//! charts drawn on the server as inline SVG: rows processed and rows
//! failed per minute over the last three hours.

use axum::extract::State;
use chrono::{Duration, DurationRound, Utc};
use maud::{html, Markup};

use super::{layout, maybe_time, status_label, time, PageError};
use crate::console::{Console, Visitor};
use crate::store::ledger::{self, MinuteCount, Status};
use crate::worker::health::SystemView;

/// How far back the charts look, in minutes.
const CHART_MINUTES: i64 = 180;
/// Each minute's bar is this wide, in SVG units (a 720-wide chart).
const BAR: i64 = 4;
const CHART_HEIGHT: i64 = 90;

pub(super) async fn page(visitor: Visitor, State(console): State<Console>) -> Result<Markup, PageError> {
    let view = SystemView::read(console.pool(), console.endpoints()).await;
    let now = Utc::now();
    let start = now.duration_trunc(Duration::minutes(1)).unwrap_or(now) - Duration::minutes(CHART_MINUTES - 1);
    let minutes = ledger::per_minute(console.pool(), start).await?;
    let body = html! {
        h1 { "Overview" }
        div.cards {
            (card("queue depth", view.queue_depth.map_or_else(|| "unknown".into(), |d| d.to_string())))
            (card("consumer lag", view.consumer_lag_seconds.map_or_else(|| "none".into(), |s| format!("{s:.1} s"))))
            (card("dead letters + failed", view.dlq.map_or_else(|| "unknown".into(), |d| d.to_string())))
            (card("replay rows waiting", view.replay_rows_waiting.map_or_else(|| "unknown".into(), |d| d.to_string())))
            (card("last processed", maybe_time(&view.last_processed_at)))
            (card("database", view.database.status.to_string()))
        }
        @if let Some(error) = &view.queue_error { p.error { "The queue depth could not be read: " (error) } }
        h2 { "Processed per minute, last 3 hours" }
        div.chart #chart-processed { (chart(&minutes, Status::Processed, start, "#3c8d4f")) }
        h2 { "Failed per minute, last 3 hours" }
        div.chart #chart-failed { (chart(&minutes, Status::Error, start, "#c0392b")) }
        h2 { "Ledger by status" }
        table #ledger {
            tr { th { "status" } th.num { "rows" } }
            @for (status, count) in &view.ledger { tr { td { (status_label(status)) } td.num { (count) } } }
            @if view.ledger.is_empty() { tr { td colspan="2" .muted { "no rows (or the ledger could not be read)" } } }
        }
        h2 { "Workers" }
        table #workers {
            tr { th { "worker" } th { "host" } th.num { "pid" } th { "state" } th { "started" } th { "last heartbeat" } }
            @for w in view.workers.iter().flatten() {
                tr {
                    td { (w.worker_id) } td { (w.host) } td.num { (w.pid) } td { (status_label(w.state.as_str())) }
                    td { (time(&w.started_at)) } td { (time(&w.last_seen)) " (" ((now - w.last_seen).num_seconds()) " s ago)" }
                }
            }
            @if view.workers.as_ref().is_none_or(Vec::is_empty) { tr { td colspan="6" .muted { "no live worker" } } }
        }
        @if let Some(stale) = view.workers_not_heard_from.as_ref().filter(|s| !s.is_empty()) {
            p.muted { "Not heard from lately: "
                @for (i, w) in stale.iter().enumerate() { @if i > 0 { ", " } (w.worker_id) " (last " (time(&w.last_seen)) ")" } }
        }
    };
    Ok(layout::render(&console, &visitor, "/", "Overview", body).await)
}

fn card(label: &str, value: String) -> Markup {
    html! { div.card { div.value { (value) } div.label { (label) } } }
}

/// One status's rows per minute as bars, the oldest minute on the left.
fn chart(minutes: &[MinuteCount], status: Status, start: chrono::DateTime<Utc>, colour: &str) -> Markup {
    let mut counts = vec![0i64; CHART_MINUTES as usize];
    for m in minutes.iter().filter(|m| m.status == status) {
        let index = (m.minute - start).num_minutes();
        if let Some(slot) = usize::try_from(index).ok().and_then(|i| counts.get_mut(i)) {
            *slot += m.count;
        }
    }
    let peak = counts.iter().copied().max().unwrap_or(0);
    let total: i64 = counts.iter().sum();
    let width = CHART_MINUTES * BAR;
    let label_y = CHART_HEIGHT + 14;
    html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(width + 70) height=(CHART_HEIGHT + 20)
            viewBox={ "0 0 " (width + 70) " " (CHART_HEIGHT + 20) } role="img"
            aria-label={ (total) " rows " (status.as_str()) " in the last 3 hours, at most " (peak) " a minute" } {
            line x1="0" y1=(CHART_HEIGHT) x2=(width) y2=(CHART_HEIGHT) stroke="#b8c0c8" {}
            @for (i, count) in counts.iter().enumerate().filter(|(_, c)| **c > 0) {
                @let h = (count * CHART_HEIGHT / peak.max(1)).max(1);
                rect x=(i as i64 * BAR) y=(CHART_HEIGHT - h) width=(BAR - 1) height=(h) fill=(colour) {
                    title { (time(&(start + Duration::minutes(i as i64)))) ": " (count) }
                }
            }
            text x="0" y=(label_y) font-size="11" fill="#5b6672" { "3 h ago" }
            text x=(width) y=(label_y) font-size="11" fill="#5b6672" text-anchor="end" { "now" }
            text x=(width + 6) y="11" font-size="11" fill="#5b6672" { (peak) "/min" }
            text x=(width + 6) y=(CHART_HEIGHT) font-size="11" fill="#5b6672" { "0" }
            text x=(width / 2) y=(label_y) font-size="11" fill="#5b6672" text-anchor="middle" { "total " (total) }
        }
    }
}
